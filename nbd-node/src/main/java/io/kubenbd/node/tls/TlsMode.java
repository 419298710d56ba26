package io.kubenbd.node.tls;

import java.util.Locale;

/** Whether a server offers TLS, and whether it insists on it before anything else. */
public enum TlsMode {
    /** NBD_OPT_STARTTLS is refused with NBD_REP_ERR_POLICY. */
    OFF,
    /** STARTTLS is offered; clients may also go on in plaintext. */
    ON,
    /** Every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD until TLS is up. */
    REQUIRE;

    public static TlsMode parse(String text) {
        try {
            return valueOf(text.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--tls must be off, on or require, got '" + text + "'");
        }
    }
}
