package io.kubenbd.operator.model;

import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Pattern;
import io.fabric8.generator.annotation.Required;
import io.fabric8.generator.annotation.Size;
import io.fabric8.generator.annotation.ValidationRule;

/**
 * A persistent dirty bitmap the server keeps for incremental backups, offered to clients as
 * {@code qemu:dirty-bitmap:<name>}. Changing {@code clearRequest} to a new value clears the
 * bitmap once (after a backup has copied what it recorded); the value last acted on is in
 * status. Bitmaps are added, cleared and removed through the running server's control API,
 * without a restart.
 */
@ValidationRule(value = "[512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576, "
        + "2097152, 4194304, 8388608, 16777216, 33554432, 67108864].exists(g, g == self.granularity)",
        message = "granularity must be a power of two from 512 to 67108864 (64 MiB) bytes")
public record DirtyBitmapSpec(
        @Required @Size(min = 1, max = 255) @Pattern("^[A-Za-z0-9_][A-Za-z0-9_.-]*$") String name,
        @Default("65536") Long granularity,
        @Size(max = 63) String clearRequest) {

    public long granularityOrDefault() {
        return granularity == null ? 65536 : granularity;
    }
}
