package io.kubenbd.node.tls;

/** A server's TLS policy and, unless TLS is off, its credentials. */
public record ServerTls(TlsMode mode, ServerTlsCredentials credentials) {
    public static final ServerTls OFF = new ServerTls(TlsMode.OFF, null);

    public ServerTls {
        if ((mode == TlsMode.OFF) != (credentials == null)) {
            throw new IllegalArgumentException(mode == TlsMode.OFF
                    ? "TLS credentials given with --tls off"
                    : "--tls " + mode.name().toLowerCase(java.util.Locale.ROOT)
                    + " needs --tls-psk FILE or --tls-cert FILE --tls-key FILE");
        }
    }
}
