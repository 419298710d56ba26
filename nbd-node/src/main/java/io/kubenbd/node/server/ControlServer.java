package io.kubenbd.node.server;

import io.kubenbd.node.grpc.GrpcEndpoint;
import io.kubenbd.node.tls.MutualTls;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermissions;

/**
 * The gRPC endpoint of the control API. Whoever reaches it can read export names, paths and
 * peers and change dirty bitmaps, so it is never open: a unix socket is created with
 * owner-only access (0600), and a TCP address is served with mutual TLS only (client
 * certificates from the given CA).
 */
public final class ControlServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ControlServer.class);

    private final GrpcEndpoint endpoint;
    private final ControlAddress address;

    private ControlServer(GrpcEndpoint endpoint, ControlAddress address) {
        this.endpoint = endpoint;
        this.address = address;
    }

    /** On a unix socket. */
    public static ControlServer start(ControlAddress address, ExportRegistry exports) throws IOException {
        return start(address, exports, null);
    }

    /**
     * @param tls required for a TCP address, refused for a unix socket
     */
    public static ControlServer start(ControlAddress address, ExportRegistry exports, MutualTls tls) throws IOException {
        ExportControlService service = new ExportControlService(exports);
        GrpcEndpoint endpoint = switch (address) {
            case ControlAddress.Unix unix -> {
                if (tls != null) {
                    throw new IllegalArgumentException("TLS is for a TCP control address; a unix socket is guarded by its file mode");
                }
                GrpcEndpoint onSocket = GrpcEndpoint.unix(unix.path(), service);
                Files.setPosixFilePermissions(unix.path(), PosixFilePermissions.fromString("rw-------"));
                yield onSocket;
            }
            case ControlAddress.Tcp tcp -> {
                if (tls == null) {
                    throw new IllegalArgumentException("control address " + tcp + " is TCP: it is served with mutual TLS only");
                }
                yield GrpcEndpoint.tcp(tcp.address(), tls, service);
            }
        };
        ControlAddress bound = address instanceof ControlAddress.Tcp tcp
                ? new ControlAddress.Tcp(new InetSocketAddress(tcp.address().getHostString(), endpoint.port()))
                : address;
        log.info("control API listening on {}{}", bound,
                tls == null ? "" : " (mutual TLS: client certificates from " + tls.caSubjects() + ")");
        return new ControlServer(endpoint, bound);
    }

    public ControlAddress address() {
        return address;
    }

    @Override
    public void close() {
        endpoint.close();
    }
}
