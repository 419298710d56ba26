package io.kubenbd.node.csi;

import io.grpc.Server;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/**
 * The node plugin's gRPC endpoint on a unix socket ({@code unix:///csi/csi.sock}, as kubelet's
 * node-driver-registrar expects). Before serving, the attachments recorded in the state
 * directory are re-established.
 */
public final class CsiServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(CsiServer.class);
    /** Debian's libfuse3 (package libfuse3-3); the JDK's library path does not include the multiarch directory. */
    public static final String DEFAULT_FUSE_LIBRARY = "/lib/x86_64-linux-gnu/libfuse3.so.3";

    private final Server server;
    private final EventLoopGroup group;
    private final Path socket;

    private CsiServer(Server server, EventLoopGroup group, Path socket) {
        this.server = server;
        this.group = group;
        this.socket = socket;
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

    /** How the plugin attaches volumes: {@code auto} (the kernel's nbd driver when present), {@code kernel} or {@code fuse}. */
    public static CsiServer start(String endpoint, String nodeId, Path stateDir, String fuseLibrary, String attach)
            throws IOException {
        Path socket = socketPath(endpoint);
        NodeService.AttachMode mode = switch (attach) {
            case "auto" -> NodeService.AttachMode.AUTO;
            case "kernel" -> NodeService.AttachMode.KERNEL;
            case "fuse" -> NodeService.AttachMode.FUSE;
            default -> throw new IllegalArgumentException("--attach must be auto, kernel or fuse, got '" + attach + "'");
        };
        NodeService node = new NodeService(nodeId, new NodeState(stateDir), fuseLibrary, mode);
        node.recover();
        Files.createDirectories(socket.getParent());
        Files.deleteIfExists(socket); // left by a plugin that was killed
        EventLoopGroup group = new EpollEventLoopGroup(1);
        Server server = NettyServerBuilder.forAddress(new DomainSocketAddress(socket.toFile()))
                .channelType(EpollServerDomainSocketChannel.class)
                .bossEventLoopGroup(group)
                .workerEventLoopGroup(group)
                .addService(new IdentityService())
                .addService(node)
                .build();
        try {
            server.start();
        } catch (IOException e) {
            group.shutdownGracefully();
            throw new IOException("cannot serve CSI on " + socket + ": " + e.getMessage(), e);
        }
        log.info("CSI node plugin {} for node {} listening on unix:{}", IdentityService.DRIVER_NAME, nodeId, socket);
        return new CsiServer(server, group, socket);
    }

    public void awaitTermination() throws InterruptedException {
        server.awaitTermination();
    }

    @Override
    public void close() {
        server.shutdown();
        try {
            server.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        server.shutdownNow();
        group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        try {
            Files.deleteIfExists(socket);
        } catch (IOException e) {
            log.warn("cannot remove {}: {}", socket, e.getMessage());
        }
    }
}
