package io.kubenbd.node.tls;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Vector;
import org.bouncycastle.tls.CipherSuite;
import org.bouncycastle.tls.PRFAlgorithm;
import org.bouncycastle.tls.ProtocolVersion;
import org.bouncycastle.tls.PskKeyExchangeMode;
import org.bouncycastle.tls.TlsPSKExternal;
import org.bouncycastle.tls.TlsPSKIdentity;
import org.junit.jupiter.api.Test;

/** The PSK client endpoint's offer and its handling of key copies. */
class PskTlsClientEndpointTest {
    private static final byte[] KEY = HexFormat.of().parseHex("0123456789abcdeffedcba98765432100123456789abcdef");
    private static final PskKey ALICE = new PskKey("alice", KEY);

    @Test
    void tls13OffersAes128GcmFirstThenChaChaAndOnlySha256Suites() {
        int[] suites = PskTlsClientEndpoint.defaultCipherSuites();
        assertThat(suites[0]).isEqualTo(CipherSuite.TLS_AES_128_GCM_SHA256);
        assertThat(suites[1]).isEqualTo(CipherSuite.TLS_CHACHA20_POLY1305_SHA256);
        List<String> names = Arrays.stream(suites).mapToObj(PskTlsClientEndpoint::cipherSuiteName).toList();
        assertThat(names).allMatch(n -> n.endsWith("_SHA256"), "SHA-256 only, the hash of the external PSK");
        assertThat(names).noneMatch(n -> n.startsWith("0x"));
        // TLS 1.2: AES-GCM before ChaCha20 before CBC.
        assertThat(names.indexOf("TLS_DHE_PSK_WITH_AES_128_GCM_SHA256"))
                .isLessThan(names.indexOf("TLS_PSK_WITH_AES_128_GCM_SHA256"))
                .isLessThan(names.indexOf("TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"));
        assertThat(names.indexOf("TLS_PSK_WITH_CHACHA20_POLY1305_SHA256"))
                .isLessThan(names.indexOf("TLS_PSK_WITH_AES_128_CBC_SHA256"));
        assertThat(new PskTlsClientEndpoint(ALICE).getSupportedCipherSuites()).containsExactly(suites);
    }

    @Test
    void offersTls13And12WithBothPskKeyExchangeModes() {
        PskTlsClientEndpoint endpoint = new PskTlsClientEndpoint(ALICE);
        assertThat(endpoint.getSupportedVersions()).containsExactly(ProtocolVersion.TLSv13, ProtocolVersion.TLSv12);
        assertThat(endpoint.getPskKeyExchangeModes()).containsExactly(PskKeyExchangeMode.psk_dhe_ke,
                PskKeyExchangeMode.psk_ke);
    }

    @Test
    void externalPskIsTheKeyBoundToSha256AndWipeDestroysIt() {
        PskTlsClientEndpoint endpoint = new PskTlsClientEndpoint(ALICE);
        Vector<?> psks = endpoint.getExternalPSKs();
        assertThat(psks).hasSize(1);
        TlsPSKExternal psk = (TlsPSKExternal) psks.getFirst();
        assertThat(new String(psk.getIdentity(), StandardCharsets.UTF_8)).isEqualTo("alice");
        assertThat(psk.getPRFAlgorithm()).isEqualTo(PRFAlgorithm.tls13_hkdf_sha256);
        assertThat(psk.getKey().extract()).isEqualTo(KEY);

        PskTlsClientEndpoint wiped = new PskTlsClientEndpoint(ALICE);
        TlsPSKExternal secret = (TlsPSKExternal) wiped.getExternalPSKs().getFirst();
        wiped.wipe();
        assertThatThrownBy(() -> secret.getKey().extract()).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void tls12OnlyOffersNoExternalPsk() {
        assertThat(new PskTlsClientEndpoint(ALICE, ProtocolVersion.TLSv12.only(),
                CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256).getExternalPSKs()).isNull();
    }

    @Test
    void tls12IdentityHandsOutAFreshCopyOfTheKeyEachTime() throws Exception {
        TlsPSKIdentity identity = new PskTlsClientEndpoint(ALICE).getPSKIdentity();
        assertThat(new String(identity.getPSKIdentity(), StandardCharsets.UTF_8)).isEqualTo("alice");
        byte[] first = identity.getPSK();
        assertThat(first).isEqualTo(KEY);
        Arrays.fill(first, (byte) 0); // as Bouncy Castle does after the premaster secret
        assertThat(identity.getPSK()).isEqualTo(KEY);
        assertThat(ALICE.key()).isEqualTo(KEY);
    }

    @Test
    void toStringNamesTheIdentityOnly() {
        String hex = HexFormat.of().formatHex(KEY);
        assertThat(new PskTlsClientEndpoint(ALICE).toString()).contains("alice").doesNotContain(hex);
        assertThat(new ClientTlsCredentials.Psk(ALICE).toString()).contains("alice").doesNotContain(hex)
                .doesNotContain(hex.substring(0, 8));
    }

    @Test
    void namesOfProtocolsAndSuites() {
        assertThat(TlsNames.protocol(ProtocolVersion.TLSv13)).isEqualTo("TLSv1.3");
        assertThat(TlsNames.protocol(ProtocolVersion.TLSv12)).isEqualTo("TLSv1.2");
        assertThat(TlsNames.cipherSuite(0x1301)).isEqualTo("TLS_AES_128_GCM_SHA256");
        assertThat(TlsNames.cipherSuite(0x00AA)).isEqualTo("TLS_DHE_PSK_WITH_AES_128_GCM_SHA256");
        assertThat(TlsNames.cipherSuite(0xFAFA)).isEqualTo("0xFAFA");
    }

    @Test
    void chaChaWorksOnThisCryptoDespiteTheJdkLackingBcsCipherName() throws Exception {
        var crypto = JdkFirstCrypto.create();
        assertThat(crypto.getHelper().createCipher("ChaCha7539")).isNotNull();
        assertThat(crypto.getHelper().createMac("Poly1305")).isNotNull();
        // AES-GCM still comes from the JDK (AES-NI), not from Bouncy Castle's provider.
        assertThat(crypto.getHelper().createCipher("AES/GCM/NoPadding").getProvider().getName()).isEqualTo("SunJCE");
    }
}
