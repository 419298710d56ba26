package io.kubenbd.operator.csi;

import io.fabric8.kubernetes.client.KubernetesClient;
import io.grpc.Server;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.operator.reconciler.ExportResources;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/**
 * The CSI controller plugin of the driver, served by the operator process on a unix socket that
 * the external-attacher sidecar of the same pod reaches through a shared emptyDir.
 *
 * <p>Why in the operator: it already has the Kubernetes client, gRPC and the truth about exports
 * (their volume handles are its NbdExports), its Deployment is where a controller sidecar belongs,
 * and it needs no privilege; a separate controller Deployment would be one more image entry point,
 * ServiceAccount and rollout for four RPCs. Every replica serves its socket; only the attacher
 * holding the attacher Lease calls it.
 *
 * <p>The server is started here rather than with nbd-node's {@code GrpcEndpoint}: the operator does
 * not depend on the data-plane module (its netty, TLS and FUSE libraries); the two share the
 * {@code .proto} files, not Java code.
 */
public final class CsiControllerEndpoint implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(CsiControllerEndpoint.class);

    private final Server server;
    private final EventLoopGroup group;
    private final Path socket;

    private CsiControllerEndpoint(Server server, EventLoopGroup group, Path socket) {
        this.server = server;
        this.group = group;
        this.socket = socket;
    }

    /**
     * Serves the Identity and Controller services on {@code socket} (a leftover socket file of a killed
     * process is replaced; its directory is created when missing), reading the cluster through {@code client}.
     */
    public static CsiControllerEndpoint start(KubernetesClient client, Path socket) throws IOException {
        Files.createDirectories(socket.toAbsolutePath().getParent());
        Files.deleteIfExists(socket);
        EventLoopGroup group = new EpollEventLoopGroup(1);
        Server server = NettyServerBuilder.forAddress(new DomainSocketAddress(socket.toFile()))
                .channelType(EpollServerDomainSocketChannel.class)
                .bossEventLoopGroup(group)
                .workerEventLoopGroup(group)
                .addService(new CsiIdentityService())
                .addService(new CsiControllerService(client))
                .build();
        try {
            server.start();
        } catch (IOException e) {
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
            throw new IOException("cannot serve the CSI controller on unix:" + socket + ": " + e.getMessage(), e);
        }
        log.info("CSI controller of {} serving on unix:{}", ExportResources.CSI_DRIVER, socket);
        return new CsiControllerEndpoint(server, group, socket);
    }

    /** Lets calls in progress finish for up to 5 s, then stops and removes the socket file. */
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
