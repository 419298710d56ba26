package io.kubenbd.node.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.kubenbd.node.server.ExportConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The YAML form of {@code serve}'s options, written to a temporary file. */
class ServeConfigFileTest {
    @TempDir
    Path dir;

    private Path yaml(String text) throws IOException {
        return Files.writeString(dir.resolve("serve.yaml"), text);
    }

    @Test
    void fullConfig() throws IOException {
        ServeConfigFile file = ServeConfigFile.load(yaml("""
                bind: 127.0.0.1
                port: 10810
                exports:
                  - name: disk
                    path: /data/disk.img
                    readonly: false
                    description: VM disk, 10 GiB, tier=gold
                    max-connections: 4
                  - name: iso
                    path: /data/a,b.iso
                    readonly: true
                """));
        assertThat(file.bind()).isEqualTo("127.0.0.1");
        assertThat(file.port()).isEqualTo(10810);
        assertThat(file.exports()).containsExactly(
                new ExportConfig("disk", Path.of("/data/disk.img"), false, "VM disk, 10 GiB, tier=gold", 4),
                new ExportConfig("iso", Path.of("/data/a,b.iso"), true, "", ExportConfig.DEFAULT_MAX_CONNECTIONS));
    }

    @Test
    void everythingIsOptional() throws IOException {
        ServeConfigFile empty = new ServeConfigFile(null, null, java.util.List.of());
        assertThat(ServeConfigFile.load(yaml(""))).isEqualTo(empty);
        assertThat(ServeConfigFile.load(yaml("# exports come from --export for now\n"))).isEqualTo(empty);
        assertThat(ServeConfigFile.load(yaml("---\n"))).isEqualTo(empty);
        assertThat(ServeConfigFile.load(yaml("port: \"2000\"\n")).port()).isEqualTo(2000);
    }

    @Test
    void unknownTopLevelKey() throws IOException {
        Path file = yaml("bind: 0.0.0.0\nlisten: 10809\n");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining(file.toString())
                .hasMessageContaining("unknown key 'listen'")
                .hasMessageContaining("known: bind, port, exports");
    }

    @Test
    void exportsMustBeAList() throws IOException {
        Path mapping = yaml("exports:\n  name: disk\n  path: /d\n");
        assertThatThrownBy(() -> ServeConfigFile.load(mapping))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("exports must be a list");
        Path scalar = yaml("exports: disk=/d\n");
        assertThatThrownBy(() -> ServeConfigFile.load(scalar))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("exports must be a list");
    }

    @Test
    void eachExportMustBeAMapping() throws IOException {
        Path file = yaml("exports:\n  - disk=/d\n");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("each export must be a mapping");
    }

    @Test
    void exportWithoutName() throws IOException {
        Path file = yaml("exports:\n  - path: /d\n");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("an export has no name");
    }

    @Test
    void exportWithoutPath() throws IOException {
        Path file = yaml("exports:\n  - name: disk\n    readonly: true\n");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("export 'disk': path is missing");
    }

    @Test
    void exportKeysAreTheCommandLineKeys() throws IOException {
        Path file = yaml("exports:\n  - name: disk\n    path: /d\n    readOnly: true\n");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("unknown key 'readOnly'")
                .hasMessageContaining("known: backing, bitmap, context, description, format, max-connections, readonly");
        Path bounds = yaml("exports:\n  - name: disk\n    path: /d\n    max-connections: 0\n");
        assertThatThrownBy(() -> ServeConfigFile.load(bounds))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("max-connections must be 1..1024, got 0");
        Path bool = yaml("exports:\n  - name: disk\n    path: /d\n    readonly: sometimes\n");
        assertThatThrownBy(() -> ServeConfigFile.load(bool))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("readonly must be true or false");
    }

    @Test
    void badPort() throws IOException {
        Path file = yaml("port: ten\n");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("port must be a number, got 'ten'");
        Path list = yaml("port: [1, 2]\n");
        assertThatThrownBy(() -> ServeConfigFile.load(list))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("port must be a number");
    }

    @Test
    void notYaml() throws IOException {
        Path file = yaml("exports: [\n");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IOException.class)
                .hasMessageStartingWith("config " + file + ": ");
    }

    @Test
    void topLevelMustBeAMapping() throws IOException {
        Path file = yaml("- disk\n");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IOException.class)
                .hasMessageStartingWith("config " + file + ": ");
    }

    @Test
    void missingFile() {
        Path file = dir.resolve("absent.yaml");
        assertThatThrownBy(() -> ServeConfigFile.load(file))
                .isInstanceOf(IOException.class)
                .hasMessageContaining(file.toString());
    }
}
