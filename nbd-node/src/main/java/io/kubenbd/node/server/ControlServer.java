package io.kubenbd.node.server;

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
import java.util.concurrent.TimeUnit;

/**
 * The gRPC endpoint of the control API. A unix socket is created with owner-only access
 * (0600): whoever can reach it can read export names and peers.
 */
public final class ControlServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ControlServer.class);

    private final Server server;
    private final EventLoopGroup group;
    private final ControlAddress address;

    private ControlServer(Server server, EventLoopGroup group, ControlAddress address) {
        this.server = server;
        this.group = group;
        this.address = address;
    }

    public static ControlServer start(ControlAddress address, ExportRegistry exports) throws IOException {
        ExportControlService service = new ExportControlService(exports);
        EventLoopGroup group = null;
        NettyServerBuilder builder;
        switch (address) {
            case ControlAddress.Unix unix -> {
                Files.deleteIfExists(unix.path()); // a socket file left by a killed server
                group = new EpollEventLoopGroup(1);
                builder = NettyServerBuilder.forAddress(new DomainSocketAddress(unix.path().toFile()))
                        .channelType(EpollServerDomainSocketChannel.class)
                        .bossEventLoopGroup(group)
                        .workerEventLoopGroup(group);
            }
            case ControlAddress.Tcp tcp -> builder = NettyServerBuilder.forAddress(tcp.address());
        }
        Server server = builder.addService(service).build();
        try {
            server.start();
        } catch (IOException e) {
            if (group != null) {
                group.shutdownGracefully();
            }
            throw new IOException("cannot start the control API on " + address + ": " + e.getMessage(), e);
        }
        if (address instanceof ControlAddress.Unix unix) {
            Files.setPosixFilePermissions(unix.path(), java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));
        }
        ControlAddress bound = address instanceof ControlAddress.Tcp tcp
                ? new ControlAddress.Tcp(new java.net.InetSocketAddress(tcp.address().getHostString(), server.getPort()))
                : address;
        log.info("control API listening on {}", bound);
        return new ControlServer(server, group, bound);
    }

    public ControlAddress address() {
        return address;
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
        if (address instanceof ControlAddress.Unix unix) {
            try {
                Files.deleteIfExists(unix.path());
            } catch (IOException e) {
                log.debug("removing {} failed: {}", unix.path(), e.getMessage());
            }
        }
    }
}
