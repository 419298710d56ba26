package io.kubenbd.node.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.kubenbd.node.server.ExportConfig;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@code --export NAME=PATH[,key[=value]...]}. */
class ExportSpecTest {

    private static ExportConfig config(String name, String path, boolean readOnly, String description, int max) {
        return new ExportConfig(name, Path.of(path), readOnly, description, max);
    }

    @Test
    void nameAndPath() {
        assertThat(ExportSpec.parse("disk=/data/disk.img"))
                .isEqualTo(config("disk", "/data/disk.img", false, "", ExportConfig.DEFAULT_MAX_CONNECTIONS));
    }

    @Test
    void contextsLimitWhatIsOfferedAndUnknownOnesAreRefused() {
        assertThat(ExportSpec.parse("disk=/d.img").contexts()).isEqualTo(ExportConfig.ALL_CONTEXTS);
        assertThat(ExportSpec.parse("disk=/d.img,context=base:allocation").contexts()).containsExactly("base:allocation");
        assertThatThrownBy(() -> ExportSpec.parse("disk=/d.img,context=qemu:dirty-bitmap:x"))
                .hasMessage("export 'disk': context must be one of [base:allocation, qemu:allocation-depth]"
                        + " (dirty bitmaps are offered by bitmap=), got 'qemu:dirty-bitmap:x'");
    }

    @Test
    void nameEndsAtTheFirstEquals() {
        assertThat(ExportSpec.parse("disk=/data/a=b.img").path()).isEqualTo(Path.of("/data/a=b.img"));
    }

    @Test
    void readonlyAsAFlagOrWithAValue() {
        assertThat(ExportSpec.parse("disk=/d,readonly").readOnly()).isTrue();
        assertThat(ExportSpec.parse("disk=/d,readonly=true").readOnly()).isTrue();
        assertThat(ExportSpec.parse("disk=/d,readonly=yes").readOnly()).isTrue();
        assertThat(ExportSpec.parse("disk=/d,READONLY").readOnly()).isTrue();
        assertThat(ExportSpec.parse("disk=/d,readonly=false").readOnly()).isFalse();
        assertThat(ExportSpec.parse("disk=/d,readonly=0").readOnly()).isFalse();
        assertThat(ExportSpec.parse("disk=/d,readonly=off").readOnly()).isFalse();
    }

    @Test
    void readonlyWithANonBooleanValue() {
        assertThatThrownBy(() -> ExportSpec.parse("disk=/d,readonly=maybe"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("readonly must be true or false, got 'maybe'");
    }

    @Test
    void descriptionKeepsCommasAndEquals() {
        ExportConfig c = ExportSpec.parse("disk=/d,description=VM disk, 10 GiB, tier=gold,readonly");
        assertThat(c.description()).isEqualTo("VM disk, 10 GiB, tier=gold");
        assertThat(c.readOnly()).isTrue();
        assertThat(ExportSpec.parse("disk=/d,description=").description()).isEmpty();
    }

    @Test
    void pathKeepsItsCommas() {
        ExportConfig c = ExportSpec.parse("disk=/data/a,b,c.img,max-connections=2");
        assertThat(c.path()).isEqualTo(Path.of("/data/a,b,c.img"));
        assertThat(c.maxConnections()).isEqualTo(2);
        // Text after the path that is not shaped like a key belongs to the path.
        assertThat(ExportSpec.parse("disk=/data/x,1=z").path()).isEqualTo(Path.of("/data/x,1=z"));
    }

    @Test
    void everyKeyTogether() {
        assertThat(ExportSpec.parse("vol-1=/dev/sdb,readonly=false,description=fast,max-connections=1"))
                .isEqualTo(config("vol-1", "/dev/sdb", false, "fast", 1));
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 8, 1024})
    void maxConnectionsWithinBounds(int n) {
        assertThat(ExportSpec.parse("disk=/d,max-connections=" + n).maxConnections()).isEqualTo(n);
    }

    @ParameterizedTest
    @ValueSource(ints = {0, -1, 1025, Integer.MAX_VALUE})
    void maxConnectionsOutOfBounds(int n) {
        assertThatThrownBy(() -> ExportSpec.parse("disk=/d,max-connections=" + n))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("max-connections must be 1..1024, got " + n);
    }

    @ParameterizedTest
    @ValueSource(strings = {"disk=/d,max-connections=many", "disk=/d,max-connections=", "disk=/d,max-connections",
            "disk=/d,max-connections=1.5", "disk=/d,max-connections=99999999999"})
    void maxConnectionsNotANumber(String spec) {
        assertThatThrownBy(() -> ExportSpec.parse(spec))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("export 'disk'")
                .hasMessageContaining("max-connections must be a number");
    }

    @Test
    void unknownKeyNamesTheKeyAndTheKnownKeys() {
        assertThatThrownBy(() -> ExportSpec.parse("disk=/d,readonly,read-only=true"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("unknown key 'read-only'")
                .hasMessageContaining("known: backing, bitmap, context, description, format, max-connections, readonly");
        assertThatThrownBy(() -> ExportSpec.build("disk", "/d", Map.of("size", List.of("1G"))))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("export 'disk': unknown key 'size'")
                .hasMessageContaining("known: backing, bitmap, context, description, format, max-connections, readonly");
    }

    @Test
    void aMistypedKeyIsRefusedNotSwallowedIntoTheDescription() {
        assertThatThrownBy(() -> ExportSpec.parse("disk=/d,description=x,max-conections=4"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("unknown key 'max-conections'");
        assertThatThrownBy(() -> ExportSpec.parse("disk=/data/x,y=z"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("unknown key 'y'");
    }

    @Test
    void bitmapsAndBackingLayersRepeatInOrder() {
        ExportConfig c = ExportSpec.parse("vm=/top.img,bitmap=daily,bitmap=hourly:1M,backing=/mid.img,backing=/base,v1.raw");
        assertThat(c.bitmaps()).containsExactly(new ExportConfig.BitmapSpec("daily", 65536),
                new ExportConfig.BitmapSpec("hourly", 1 << 20));
        assertThat(c.backing()).containsExactly(Path.of("/mid.img"), Path.of("/base,v1.raw"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"d=/x,bitmap=", "d=/x,bitmap=-bad", "d=/x,bitmap=b:1000", "d=/x,bitmap=b:256",
            "d=/x,bitmap=b:128M", "d=/x,bitmap=b:lots", "d=/x,bitmap=b,bitmap=b", "d=/x,backing="})
    void badBitmapsAndBackingAreRefusedWithTheReason(String spec) {
        assertThatThrownBy(() -> ExportSpec.parse(spec)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageStartingWith("export 'd'")
                .hasMessageMatching("(?s).*(bitmap|backing).*");
    }

    @Test
    void duplicateKey() {
        assertThatThrownBy(() -> ExportSpec.parse("disk=/d,readonly,readonly=false"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("readonly given twice");
        assertThatThrownBy(() -> ExportSpec.parse("disk=/d,description=a,Description=b"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("description given twice");
    }

    @Test
    void emptyName() {
        assertThatThrownBy(() -> ExportSpec.parse("=/data/disk.img"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("expected NAME=PATH");
        assertThatThrownBy(() -> ExportSpec.build("", "/d", Map.of()))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("export name must not be empty");
    }

    @ParameterizedTest
    @ValueSource(strings = {"disk=", "disk=,readonly"})
    void missingPath(String spec) {
        assertThatThrownBy(() -> ExportSpec.parse(spec))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("export 'disk': path is missing");
    }

    @Test
    void noEqualsAtAll() {
        assertThatThrownBy(() -> ExportSpec.parse("disk"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("--export 'disk': expected NAME=PATH[,key=value...]");
    }

    @Test
    void buildTakesNullValuesAsFlags() {
        Map<String, List<String>> options = new LinkedHashMap<>();
        options.put("readonly", java.util.Collections.singletonList(null));
        options.put("description", java.util.Collections.singletonList(null));
        ExportConfig c = ExportSpec.build("disk", "/d", options);
        assertThat(c.readOnly()).isTrue();
        assertThat(c.description()).isEmpty();
    }

    @Test
    void nameLongerThanTheProtocolAllows() {
        assertThatThrownBy(() -> ExportSpec.parse("x".repeat(4097) + "=/d"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("longer than 4096 bytes");
    }
}
