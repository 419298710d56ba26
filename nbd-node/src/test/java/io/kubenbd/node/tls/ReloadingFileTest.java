package io.kubenbd.node.tls;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.FileTime;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class ReloadingFileTest {
    @TempDir
    Path dir;

    private final List<String> reports = new ArrayList<>();

    private ReloadingFile<PskKeyFile> keys(Path file, long intervalNanos) throws IOException {
        return new ReloadingFile<>(List.of(file), () -> PskKeyFile.read(file), intervalNanos, reports::add);
    }

    @Test
    void aRewrittenFileIsReadAgain() throws IOException {
        Path file = dir.resolve("keys.psk");
        Files.writeString(file, "alice:0102\n");
        ReloadingFile<PskKeyFile> keys = keys(file, 0);
        assertThat(keys.current().find("alice")).isPresent();

        replace(file, "bob:0304\n");
        assertThat(keys.current().find("bob")).isPresent();
        assertThat(keys.current().find("alice")).isEmpty();
        assertThat(reports).singleElement().asString().startsWith("reloaded");
    }

    @Test
    void aSymlinkSwapLikeAKubernetesSecretUpdateIsSeen() throws IOException {
        Path v1 = Files.createDirectories(dir.resolve("..2026_v1"));
        Path v2 = Files.createDirectories(dir.resolve("..2026_v2"));
        Files.writeString(v1.resolve("keys.psk"), "alice:0102\n");
        Files.writeString(v2.resolve("keys.psk"), "alice:0a0b\n");
        Path data = dir.resolve("..data");
        Files.createSymbolicLink(data, v1.getFileName());
        Path file = dir.resolve("keys.psk");
        Files.createSymbolicLink(file, Path.of("..data", "keys.psk"));
        ReloadingFile<PskKeyFile> keys = keys(file, 0);
        byte[] before = keys.current().find("alice").orElseThrow().key();

        Path next = dir.resolve("..data_tmp");
        Files.createSymbolicLink(next, v2.getFileName());
        Files.move(next, data, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);

        assertThat(keys.current().find("alice").orElseThrow().key()).isNotEqualTo(before).containsExactly(0x0a, 0x0b);
    }

    @Test
    void aBrokenUpdateKeepsThePreviousKeysAndSaysWhyOnce() throws IOException {
        Path file = dir.resolve("keys.psk");
        Files.writeString(file, "alice:0102\n");
        ReloadingFile<PskKeyFile> keys = keys(file, 0);

        replace(file, "alice:not-hex\n");
        assertThat(keys.current().find("alice")).isPresent();
        assertThat(keys.current().find("alice")).isPresent();
        assertThat(reports).singleElement().asString()
                .contains("failed, keeping the previous material", "line 1", "not hexadecimal")
                .doesNotContain("not-hex");
    }

    @Test
    void filesAreLookedAtNoMoreThanOncePerInterval() throws IOException {
        Path file = dir.resolve("keys.psk");
        Files.writeString(file, "alice:0102\n");
        ReloadingFile<PskKeyFile> keys = keys(file, 60_000_000_000L);
        replace(file, "bob:0304\n");
        assertThat(keys.current().find("alice")).as("within the interval the old keys stay").isPresent();
    }

    @Test
    void aMissingFileAtStartIsTheCallersError() {
        assertThatThrownBy(() -> keys(dir.resolve("absent.psk"), 0)).isInstanceOf(IOException.class)
                .hasMessageContaining("absent.psk");
    }

    /** Writes a new file and renames it over the old one, with a distinct modification time. */
    private static void replace(Path file, String text) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        Files.writeString(tmp, text);
        Files.setLastModifiedTime(tmp, FileTime.from(Instant.now().plusSeconds(5)));
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
