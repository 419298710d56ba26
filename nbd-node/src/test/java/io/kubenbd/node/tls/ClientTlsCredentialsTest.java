package io.kubenbd.node.tls;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Client credentials from psktool key files; errors name files and identities, never keys. */
class ClientTlsCredentialsTest {
    private static final String ALICE_HEX = "a1a1a1a1b2b2b2b2c3c3c3c3d4d4d4d4";
    private static final String BOB_HEX = "0f0e0d0c0b0a09080706050403020100";

    @TempDir
    Path dir;

    @Test
    void identityPicksItsKey() throws IOException {
        Path file = keys("alice:" + ALICE_HEX + "\nbob:" + BOB_HEX + "\n");
        ClientTlsCredentials.Psk psk = ClientTlsCredentials.Psk.fromFile(file, "bob");
        assertThat(psk.key().identity()).isEqualTo("bob");
        assertThat(psk.key().key()).isEqualTo(java.util.HexFormat.of().parseHex(BOB_HEX));
    }

    @Test
    void noIdentityTakesTheOnlyKey() throws IOException {
        assertThat(ClientTlsCredentials.Psk.fromFile(keys("alice:" + ALICE_HEX + "\n"), null).key().identity())
                .isEqualTo("alice");
        assertThat(ClientTlsCredentials.Psk.fromFile(keys("alice:" + ALICE_HEX + "\n"), "").key().identity())
                .isEqualTo("alice");
    }

    @Test
    void noIdentityWithSeveralKeysIsAnErrorWithoutKeys() throws IOException {
        Path file = keys("alice:" + ALICE_HEX + "\nbob:" + BOB_HEX + "\n");
        assertThatThrownBy(() -> ClientTlsCredentials.Psk.fromFile(file, null))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("2 identities")
                .satisfies(e -> assertThat(e.getMessage()).doesNotContain(ALICE_HEX).doesNotContain(BOB_HEX));
    }

    @Test
    void unknownIdentityNamesFileAndIdentityButNoKey() throws IOException {
        Path file = keys("alice:" + ALICE_HEX + "\n");
        assertThatThrownBy(() -> ClientTlsCredentials.Psk.fromFile(file, "carol"))
                .isInstanceOf(IOException.class)
                .hasMessageContaining(file.toString())
                .hasMessageContaining("'carol'")
                .satisfies(e -> assertThat(e.getMessage()).doesNotContain(ALICE_HEX));
    }

    @Test
    void toStringOfCredentialsHasNoKey() throws IOException {
        ClientTlsCredentials.Psk psk = ClientTlsCredentials.Psk.fromFile(keys("alice:" + ALICE_HEX + "\n"), "alice");
        assertThat(psk.toString()).contains("alice").doesNotContain(ALICE_HEX).doesNotContainIgnoringCase("a1a1");
    }

    @Test
    void x509CertificateAndKeyGoTogether() {
        assertThatThrownBy(() -> new ClientTlsCredentials.X509(Path.of("ca.pem"), Path.of("c.pem"), null, true))
                .isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> new ClientTlsCredentials.X509(Path.of("ca.pem"), null, Path.of("k.pem"), true))
                .isInstanceOf(IllegalArgumentException.class);
        assertThat(new ClientTlsCredentials.X509(Path.of("ca.pem")).verifyHostname()).isTrue();
    }

    @Test
    void unreadableCaFileIsAnIoErrorNamingIt() {
        Path missing = dir.resolve("missing-ca.pem");
        assertThatThrownBy(() -> X509ClientContexts.create(new ClientTlsCredentials.X509(missing)))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("missing-ca.pem");
    }

    private Path keys(String text) throws IOException {
        Path file = dir.resolve("keys.psk");
        Files.writeString(file, text);
        return file;
    }
}
