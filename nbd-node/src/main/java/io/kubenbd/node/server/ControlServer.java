package io.kubenbd.node.server;

import io.kubenbd.node.grpc.GrpcEndpoint;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermissions;

/**
 * The gRPC endpoint of the control API. A unix socket is created with owner-only access
 * (0600): whoever can reach it can read export names and peers.
 */
public final class ControlServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ControlServer.class);

    private final GrpcEndpoint endpoint;
    private final ControlAddress address;

    private ControlServer(GrpcEndpoint endpoint, ControlAddress address) {
        this.endpoint = endpoint;
        this.address = address;
    }

    public static ControlServer start(ControlAddress address, ExportRegistry exports) throws IOException {
        ExportControlService service = new ExportControlService(exports);
        GrpcEndpoint endpoint = switch (address) {
            case ControlAddress.Unix unix -> GrpcEndpoint.unix(unix.path(), service);
            case ControlAddress.Tcp tcp -> GrpcEndpoint.tcp(tcp.address(), service);
        };
        if (address instanceof ControlAddress.Unix unix) {
            Files.setPosixFilePermissions(unix.path(), PosixFilePermissions.fromString("rw-------"));
        }
        ControlAddress bound = address instanceof ControlAddress.Tcp tcp
                ? new ControlAddress.Tcp(new InetSocketAddress(tcp.address().getHostString(), endpoint.port()))
                : address;
        log.info("control API listening on {}", bound);
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
