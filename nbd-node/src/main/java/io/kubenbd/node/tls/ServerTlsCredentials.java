package io.kubenbd.node.tls;

import io.netty.handler.ssl.ClientAuth;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import io.netty.handler.ssl.SslProvider;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/** What a server proves itself with; each kind re-reads its files when they change. */
public sealed interface ServerTlsCredentials {
    /** How often a handshake may look at the files' modification times. */
    long CHECK_INTERVAL_NANOS = 2_000_000_000L;

    /** Pre-shared keys, one per client identity (Bouncy Castle TLS: the JDK has no PSK suites). */
    record Psk(ReloadingFile<PskKeyFile> keys) implements ServerTlsCredentials {
        public static Psk fromFile(Path file, Consumer<String> log) throws IOException {
            return new Psk(new ReloadingFile<>(List.of(file), () -> PskKeyFile.read(file), CHECK_INTERVAL_NANOS, log));
        }
    }

    /**
     * A certificate and key, and optionally a CA that client certificates must chain to
     * (JDK TLS through netty's SslHandler; PEM files, PKCS#1, PKCS#8 or EC keys). TLS 1.3 and
     * 1.2; TLS 1.2 (ECDHE, AES-GCM) when client certificates are required, see {@link #build}.
     */
    record X509(ReloadingFile<SslContext> context) implements ServerTlsCredentials {
        public static X509 fromFiles(Path certificate, Path key, Path clientCa, Consumer<String> log) throws IOException {
            List<Path> files = new ArrayList<>(List.of(certificate, key));
            if (clientCa != null) {
                files.add(clientCa);
            }
            return new X509(new ReloadingFile<>(files, () -> build(certificate, key, clientCa), CHECK_INTERVAL_NANOS, log));
        }

        private static SslContext build(Path certificate, Path key, Path clientCa) throws IOException {
            try {
                SslContextBuilder builder = SslContextBuilder.forServer(certificate.toFile(), key.toFile())
                        .sslProvider(SslProvider.JDK);
                if (clientCa == null) {
                    builder.protocols("TLSv1.3", "TLSv1.2");
                } else {
                    // GnuTLS 3.7 clients (qemu 10, libnbd 1.14) answer the JDK's TLS 1.3 certificate
                    // request with no certificate when theirs has an RSA key; with TLS 1.2 they send it.
                    builder.protocols("TLSv1.2").trustManager(clientCa.toFile()).clientAuth(ClientAuth.REQUIRE);
                }
                return builder.build();
            } catch (IllegalArgumentException | javax.net.ssl.SSLException e) {
                throw new IOException("cannot use certificate " + certificate + " with key " + key
                        + (clientCa == null ? "" : " and CA " + clientCa) + ": " + e.getMessage(), e);
            }
        }
    }
}
