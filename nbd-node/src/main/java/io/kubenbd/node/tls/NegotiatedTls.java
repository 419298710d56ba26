package io.kubenbd.node.tls;

/** What a finished TLS handshake agreed on, e.g. {@code TLSv1.3} and {@code TLS_AES_128_GCM_SHA256}. */
public record NegotiatedTls(String protocol, String cipherSuite) {
    @Override
    public String toString() {
        return protocol + " " + cipherSuite;
    }
}
