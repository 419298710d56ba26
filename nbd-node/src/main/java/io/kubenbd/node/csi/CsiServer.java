package io.kubenbd.node.csi;

import io.kubenbd.node.grpc.GrpcEndpoint;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Path;

/**
 * The node plugin's gRPC endpoint on a unix socket ({@code unix:///csi/csi.sock}, as kubelet's
 * node-driver-registrar expects). Before serving, the attachments recorded in the state
 * directory are re-established.
 */
public final class CsiServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(CsiServer.class);
    /** Debian's libfuse3 (package libfuse3-3); the JDK's library path does not include the multiarch directory. */
    public static final String DEFAULT_FUSE_LIBRARY = "/lib/x86_64-linux-gnu/libfuse3.so.3";

    private final GrpcEndpoint endpoint;

    private CsiServer(GrpcEndpoint endpoint) {
        this.endpoint = endpoint;
    }

    /** The socket path of {@code unix:///path} or {@code unix:/path}. */
    public static Path socketPath(String endpoint) {
        if (!endpoint.startsWith("unix:")) {
            throw new IllegalArgumentException("--endpoint must be unix:///PATH, got '" + endpoint + "'");
        }
        String path = endpoint.substring("unix:".length()).replaceFirst("^//", "");
        if (!path.startsWith("/")) {
            throw new IllegalArgumentException("--endpoint must name an absolute socket path, got '" + endpoint + "'");
        }
        return Path.of(path);
    }

    /**
     * @param attach        how the plugin attaches volumes: {@code auto} (the kernel's nbd driver when
     *                      present), {@code kernel} or {@code fuse}
     * @param sourceAddress the address NBD connections are made from, or null for the system's choice
     */
    public static CsiServer start(String endpoint, String nodeId, Path stateDir, String fuseLibrary, String attach,
                                  InetAddress sourceAddress) throws IOException {
        Path socket = socketPath(endpoint);
        NodeService.AttachMode mode = switch (attach) {
            case "auto" -> NodeService.AttachMode.AUTO;
            case "kernel" -> NodeService.AttachMode.KERNEL;
            case "fuse" -> NodeService.AttachMode.FUSE;
            default -> throw new IllegalArgumentException("--attach must be auto, kernel or fuse, got '" + attach + "'");
        };
        NodeService node = new NodeService(nodeId, new NodeState(stateDir), fuseLibrary, mode, sourceAddress);
        node.recover();
        GrpcEndpoint grpc = GrpcEndpoint.unix(socket, new IdentityService(), node);
        log.info("CSI node plugin {} for node {} listening on unix:{}", IdentityService.DRIVER_NAME, nodeId, socket);
        return new CsiServer(grpc);
    }

    @Override
    public void close() {
        endpoint.close();
    }
}
