package io.kubenbd.node.grpc;

import io.grpc.BindableService;
import io.grpc.Server;
import io.grpc.ServerCredentials;
import io.grpc.TlsServerCredentials;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.node.tls.MutualTls;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

/**
 * A running gRPC server (grpc-java on its shaded netty) on a unix socket or, with mutual TLS
 * only, a TCP address. A unix socket left by a killed process is replaced; closing lets calls
 * in progress finish for up to 5 s, then stops the server and removes the socket file.
 */
public final class GrpcEndpoint implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(GrpcEndpoint.class);

    private final Server server;
    private final EventLoopGroup group;
    private final Path socket;

    private GrpcEndpoint(Server server, EventLoopGroup group, Path socket) {
        this.server = server;
        this.group = group;
        this.socket = socket;
    }

    /** Serves on a unix socket; its directory is created when missing. */
    public static GrpcEndpoint unix(Path socket, BindableService... services) throws IOException {
        Files.createDirectories(socket.toAbsolutePath().getParent());
        Files.deleteIfExists(socket);
        EventLoopGroup group = new EpollEventLoopGroup(1);
        NettyServerBuilder builder = NettyServerBuilder.forAddress(new DomainSocketAddress(socket.toFile()))
                .channelType(EpollServerDomainSocketChannel.class)
                .bossEventLoopGroup(group)
                .workerEventLoopGroup(group);
        return start(builder, group, socket, "unix:" + socket, services);
    }

    /**
     * Serves on a TCP address with mutual TLS only: the client must present a certificate that
     * {@code tls}' trust manager accepts, or the handshake fails before any call.
     */
    public static GrpcEndpoint tcp(InetSocketAddress address, MutualTls tls, BindableService... services) throws IOException {
        ServerCredentials credentials = TlsServerCredentials.newBuilder()
                .keyManager(tls.keyManager())
                .trustManager(tls.trustManager())
                .clientAuth(TlsServerCredentials.ClientAuth.REQUIRE)
                .build();
        return start(NettyServerBuilder.forAddress(address, credentials), null, null, address.toString(), services);
    }

    private static GrpcEndpoint start(NettyServerBuilder builder, EventLoopGroup group, Path socket, String where,
                                      BindableService... services) throws IOException {
        for (BindableService service : services) {
            builder.addService(service);
        }
        Server server = builder.build();
        try {
            server.start();
        } catch (IOException e) {
            if (group != null) {
                group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
            }
            throw new IOException("cannot serve gRPC on " + where + ": " + e.getMessage(), e);
        }
        return new GrpcEndpoint(server, group, socket);
    }

    /** The TCP port bound (for a TCP endpoint asked for port 0). */
    public int port() {
        return server.getPort();
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
        if (group != null) {
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
        if (socket != null) {
            try {
                Files.deleteIfExists(socket);
            } catch (IOException e) {
                log.warn("cannot remove {}: {}", socket, e.getMessage());
            }
        }
    }
}
