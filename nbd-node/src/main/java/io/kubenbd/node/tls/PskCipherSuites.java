package io.kubenbd.node.tls;

import org.bouncycastle.tls.CipherSuite;

/**
 * The PSK cipher suites both ends offer, in preference order. TLS 1.3: AES-128-GCM first and
 * only SHA-256 suites, because the external PSK is bound to SHA-256 and Bouncy Castle does
 * not skip a 1.3 suite whose hash differs from the PSK's. TLS 1.2: AES-GCM, then
 * ChaCha20-Poly1305, then AES-CBC; ECDHE before DHE before plain PSK. AES-GCM leads because
 * the JDK runs it on the CPU's AES instructions. GnuTLS has no ECDHE_PSK AES-GCM suites
 * (RFC 8442); offering them costs nothing.
 */
final class PskCipherSuites {
    private static final int[] PREFERRED = {
        CipherSuite.TLS_AES_128_GCM_SHA256,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_DHE_PSK_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite.TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
        CipherSuite.TLS_DHE_PSK_WITH_AES_128_CBC_SHA256,
        CipherSuite.TLS_PSK_WITH_AES_128_CBC_SHA256,
    };

    private PskCipherSuites() {}

    /** A fresh copy: Bouncy Castle callers may keep and modify what they are given. */
    static int[] preferred() {
        return PREFERRED.clone();
    }
}
