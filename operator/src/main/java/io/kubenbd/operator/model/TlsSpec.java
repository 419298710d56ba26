package io.kubenbd.operator.model;

import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Pattern;
import io.fabric8.generator.annotation.ValidationRule;

/**
 * TLS of the export. With mode {@code psk} and no {@code secretName} the operator generates a
 * Secret {@code <name>-psk} holding a random 256-bit key; a named Secret must hold {@code keys.psk}.
 */
@ValidationRule(value = "self.mode != 'x509' || (has(self.secretName) && size(self.secretName) > 0)",
        message = "tls.mode x509 needs tls.secretName: a kubernetes.io/tls Secret with tls.crt and tls.key")
@ValidationRule(value = "self.mode != 'none' || !has(self.secretName) || size(self.secretName) == 0",
        message = "tls.secretName has no meaning with tls.mode none; remove it or choose psk or x509")
public record TlsSpec(
        @Default("psk") TlsMode mode,
        @Pattern("^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$") String secretName) {

    public TlsMode modeOrDefault() {
        return mode == null ? TlsMode.PSK : mode;
    }

    public boolean generatedSecret() {
        return modeOrDefault() == TlsMode.PSK && (secretName == null || secretName.isEmpty());
    }
}
