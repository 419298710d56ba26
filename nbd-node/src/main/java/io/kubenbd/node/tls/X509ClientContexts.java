package io.kubenbd.node.tls;

import io.netty.handler.ssl.JdkSslContext;
import io.netty.handler.ssl.SslContextBuilder;
import io.netty.handler.ssl.SslProvider;

import javax.net.ssl.SSLContext;
import java.io.IOException;

/** A JDK {@link SSLContext} for an NBD client from PEM files (netty reads them). */
public final class X509ClientContexts {
    private X509ClientContexts() {}

    public static SSLContext create(ClientTlsCredentials.X509 credentials) throws IOException {
        try {
            SslContextBuilder builder = SslContextBuilder.forClient()
                    .trustManager(credentials.caFile().toFile())
                    .sslProvider(SslProvider.JDK)
                    .protocols("TLSv1.3", "TLSv1.2");
            if (credentials.certFile() != null) {
                builder.keyManager(credentials.certFile().toFile(), credentials.keyFile().toFile());
            }
            return ((JdkSslContext) builder.build()).context();
        } catch (IOException e) {
            throw e;
        } catch (Exception e) {
            // netty wraps file and key problems in IllegalArgumentException/SSLException; say which files.
            throw new IOException("cannot load TLS certificates (CA " + credentials.caFile()
                    + (credentials.certFile() == null ? "" : ", certificate " + credentials.certFile()
                    + ", key " + credentials.keyFile()) + "): " + e.getMessage(), e);
        }
    }
}
