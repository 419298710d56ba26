package io.kubenbd.operator.model;

import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Pattern;
import io.fabric8.generator.annotation.ValidationRule;

/**
 * TLS of the export. With mode {@code psk} and no {@code secretName} the operator generates a
 * Secret {@code <name>-psk} holding a random 256-bit key; a named Secret must hold {@code keys.psk}
 * with keys of at least 128 bits. With mode {@code x509} the Secret's {@code ca.crt} verifies client
 * certificates; a server that lets any client in needs {@code clientAuthentication: None}, said
 * explicitly.
 */
@ValidationRule(value = "self.mode != 'x509' || (has(self.secretName) && size(self.secretName) > 0)",
        message = "tls.mode x509 needs tls.secretName: a kubernetes.io/tls Secret with tls.crt and tls.key")
@ValidationRule(value = "self.mode != 'none' || !has(self.secretName) || size(self.secretName) == 0",
        message = "tls.secretName has no meaning with tls.mode none; remove it or choose psk or x509")
@ValidationRule(value = "!has(self.clientAuthentication) || self.mode == 'x509'",
        message = "tls.clientAuthentication applies to tls.mode x509 only: with psk every client proves it holds the key; remove it")
public record TlsSpec(
        @Default("psk") TlsMode mode,
        @Pattern("^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$") String secretName,
        ClientAuthentication clientAuthentication) {

    public TlsSpec(TlsMode mode, String secretName) {
        this(mode, secretName, null);
    }

    public TlsMode modeOrDefault() {
        return mode == null ? TlsMode.PSK : mode;
    }

    /** Whether an x509 server requires client certificates (always, unless the spec says None). */
    public boolean clientCertificatesRequired() {
        return modeOrDefault() == TlsMode.X509 && clientAuthentication != ClientAuthentication.None;
    }

    public boolean generatedSecret() {
        return modeOrDefault() == TlsMode.PSK && (secretName == null || secretName.isEmpty());
    }

    /** How an x509 server authenticates its clients. */
    public enum ClientAuthentication {
        /** Clients present a certificate signed by the Secret's {@code ca.crt} (the default; the Secret must have one). */
        Certificate,
        /** Any client that reaches the Service may read and write the volume. */
        None
    }
}
