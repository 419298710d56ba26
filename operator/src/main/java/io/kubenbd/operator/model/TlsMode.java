package io.kubenbd.operator.model;

import com.fasterxml.jackson.annotation.JsonProperty;

/** How clients authenticate the server and themselves. */
public enum TlsMode {
    /** TLS with a pre-shared key from a Secret ({@code keys.psk}, psktool's format). */
    @JsonProperty("psk") PSK,
    /** TLS with an X.509 certificate from a {@code kubernetes.io/tls} Secret. */
    @JsonProperty("x509") X509,
    /** Plain NBD: anyone who can reach the Service can read and write the volume. */
    @JsonProperty("none") NONE
}
