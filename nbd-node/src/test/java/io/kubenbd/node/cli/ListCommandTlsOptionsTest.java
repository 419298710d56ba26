package io.kubenbd.node.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.kubenbd.node.tls.ClientTlsCredentials;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** Which TLS credentials {@code nbd-node list} builds from its URI and options. */
class ListCommandTlsOptionsTest {
    @TempDir
    Path dir;

    private ClientTlsCredentials credentials(String... args) throws IOException {
        ListCommand command = new ListCommand();
        new CommandLine(command).parseArgs(args);
        return command.credentials(NbdUri.parse(command.uri));
    }

    private Path keys(String text) throws IOException {
        Path file = dir.resolve("keys.psk");
        Files.writeString(file, text);
        return file;
    }

    @Test
    void plainNbdHasNoTls() throws IOException {
        assertThat(credentials("nbd://h:1")).isNull();
    }

    @Test
    void pskFromTheUri() throws IOException {
        Path file = keys("alice:00112233\nbob:44556677\n");
        ClientTlsCredentials c = credentials("nbds://bob@h?tls-psk-file=" + file);
        assertThat(c).isInstanceOfSatisfying(ClientTlsCredentials.Psk.class,
                p -> assertThat(p.key().identity()).isEqualTo("bob"));
    }

    @Test
    void pskFromOptions() throws IOException {
        Path file = keys("alice:00112233\nbob:44556677\n");
        assertThat(credentials("--tls-psk", file.toString(), "--tls-username", "alice", "nbds://h"))
                .isInstanceOfSatisfying(ClientTlsCredentials.Psk.class,
                        p -> assertThat(p.key().identity()).isEqualTo("alice"));
    }

    @Test
    void x509FromOptions() throws IOException {
        assertThat(credentials("--tls-ca", "/ca.pem", "--tls-cert", "/c.pem", "--tls-key", "/k.pem", "nbds://h"))
                .isEqualTo(new ClientTlsCredentials.X509(Path.of("/ca.pem"), Path.of("/c.pem"), Path.of("/k.pem"), true));
    }

    @Test
    void mistakesAreOneLineErrors() throws IOException {
        Path file = keys("alice:00112233\n");
        assertThatThrownBy(() -> credentials("--tls-psk", file.toString(), "nbd://h"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("need an nbds:// URI");
        assertThatThrownBy(() -> credentials("nbds://h"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("nbds:// needs credentials");
        assertThatThrownBy(() -> credentials("--tls-ca", "/ca.pem", "nbds://h?tls-psk-file=" + file))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("not both");
        assertThatThrownBy(() -> credentials("--tls-cert", "/c.pem", "--tls-key", "/k.pem", "nbds://h"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("need --tls-ca");
        assertThatThrownBy(() -> credentials("--tls-ca", "/ca.pem", "--tls-cert", "/c.pem", "nbds://h"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("go together");
        assertThatThrownBy(() -> credentials("--tls-username", "bob", "nbds://alice@h?tls-psk-file=" + file))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("two TLS identities");
        assertThatThrownBy(() -> credentials("nbds://carol@h?tls-psk-file=" + file))
                .isInstanceOf(IOException.class).hasMessageContaining("'carol'");
    }
}
