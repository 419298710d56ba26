package io.kubenbd.node.tls;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Objects;

/**
 * What an NBD client brings to NBD_OPT_STARTTLS: a pre-shared key (Bouncy Castle TLS-PSK) or
 * X.509 trust anchors with an optional client certificate (the JDK's TLS). No key material
 * appears in {@link #toString()}.
 */
public sealed interface ClientTlsCredentials {

    /** TLS-PSK with one identity and its key. */
    record Psk(PskKey key) implements ClientTlsCredentials {
        public Psk {
            Objects.requireNonNull(key, "key");
        }

        /**
         * The key of {@code identity} in a psktool/qemu {@code keys.psk} file, or the file's
         * only key when {@code identity} is null.
         */
        public static Psk fromFile(Path file, String identity) throws IOException {
            PskKeyFile keys = PskKeyFile.read(file);
            if (identity == null || identity.isEmpty()) {
                return new Psk(keys.single());
            }
            return new Psk(keys.find(identity).orElseThrow(
                    () -> new IOException(file + " has no key for identity '" + identity + "'")));
        }
    }

    /**
     * X.509: the server's certificate must chain to a certificate in {@code caFile} (PEM) and,
     * when {@code verifyHostname}, name the host connected to (DNS name or IP address SAN).
     * {@code certFile}/{@code keyFile} (PEM, key in PKCS#8) are the client's own certificate for
     * servers that ask for one (qemu-nbd's default); both or neither.
     */
    record X509(Path caFile, Path certFile, Path keyFile, boolean verifyHostname) implements ClientTlsCredentials {
        public X509 {
            Objects.requireNonNull(caFile, "caFile");
            if ((certFile == null) != (keyFile == null)) {
                throw new IllegalArgumentException("a client certificate needs its key and a key its certificate");
            }
        }

        public X509(Path caFile) {
            this(caFile, null, null, true);
        }
    }
}
