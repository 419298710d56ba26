package io.kubenbd.node.server;

import io.kubenbd.node.protocol.OptionDecoder;
import io.kubenbd.node.tls.ServerTls;
import io.kubenbd.node.tls.ServerTlsCredentials;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.WriteBufferWaterMark;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollChannelOption;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollServerSocketChannel;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.ServerSocketChannel;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.util.concurrent.GlobalEventExecutor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A listening NBD server. Uses netty's native epoll transport (NIO only where epoll is not
 * available) with one event loop per core for sockets and a separate thread pool for
 * storage calls, so a slow disk never stalls the network.
 */
public final class NbdServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(NbdServer.class);
    /** Output a handshake may queue before the server stops reading its options: replies are small. */
    static final WriteBufferWaterMark HANDSHAKE_WATER_MARK = new WriteBufferWaterMark(16 << 10, 64 << 10);
    /**
     * Unwritten output beyond which transmission stops taking requests. Read replies are also
     * held to the buffer budget until written; this bounds the small replies (acks, errors) of a
     * client that sends without reading.
     */
    static final WriteBufferWaterMark TRANSMISSION_WATER_MARK = new WriteBufferWaterMark(1 << 20, 4 << 20);
    private static final long REFUSAL_LOG_INTERVAL_NANOS = 1_000_000_000L;

    private final ExportRegistry exports;
    private final ServerSettings settings;
    private final ServerTls tls;
    private final EventLoopGroup bossGroup;
    private final EventLoopGroup workerGroup;
    private final ExecutorService io;
    private final ChannelGroup connections = new DefaultChannelGroup(GlobalEventExecutor.INSTANCE);
    private final AtomicLong connectionIds = new AtomicLong();
    private final BufferBudget budget;
    private final HandshakeAdmission handshakes;
    private final AtomicLong lastRefusalLog = new AtomicLong(System.nanoTime() - REFUSAL_LOG_INTERVAL_NANOS);
    private final AtomicLong unloggedRefusals = new AtomicLong();
    private volatile boolean shuttingDown;
    private Channel listener;

    private NbdServer(ExportRegistry exports, ServerSettings settings, ServerTls tls) {
        this.exports = exports;
        this.settings = settings;
        this.tls = tls;
        var factory = Epoll.isAvailable() ? EpollIoHandler.newFactory() : NioIoHandler.newFactory();
        this.bossGroup = new MultiThreadIoEventLoopGroup(1, factory);
        this.workerGroup = new MultiThreadIoEventLoopGroup(Runtime.getRuntime().availableProcessors(), factory);
        this.io = Executors.newFixedThreadPool(settings.ioThreads(), daemonThreads("nbd-io-"));
        this.budget = new BufferBudget(settings.bufferBudgetBytes());
        this.handshakes = new HandshakeAdmission(settings.maxHandshakes(), settings.maxHandshakesPerPeer());
    }

    /** Opens nothing itself: {@code exports} are already open and become owned by the server. */
    public static NbdServer start(InetSocketAddress bind, ExportRegistry exports, ServerSettings settings)
            throws IOException, InterruptedException {
        return start(bind, exports, settings, ServerTls.OFF);
    }

    public static NbdServer start(InetSocketAddress bind, ExportRegistry exports, ServerSettings settings,
                                  ServerTls tls) throws IOException, InterruptedException {
        NbdServer server = new NbdServer(exports, settings, tls);
        try {
            server.bind(bind);
        } catch (IOException | RuntimeException | InterruptedException e) {
            server.close();
            throw e;
        }
        return server;
    }

    private void bind(InetSocketAddress address) throws IOException, InterruptedException {
        ServerContext context = new ServerContext(exports, settings, tls, io, () -> shuttingDown, budget, handshakes);
        Class<? extends ServerSocketChannel> channelType =
                Epoll.isAvailable() ? EpollServerSocketChannel.class : NioServerSocketChannel.class;
        ServerBootstrap bootstrap = new ServerBootstrap()
                .group(bossGroup, workerGroup)
                .channel(channelType)
                .option(ChannelOption.SO_REUSEADDR, true)
                .option(ChannelOption.SO_BACKLOG, 128)
                .childOption(ChannelOption.TCP_NODELAY, true)
                .childOption(ChannelOption.SO_KEEPALIVE, true)
                .childOption(ChannelOption.WRITE_BUFFER_WATER_MARK, HANDSHAKE_WATER_MARK)
                .childHandler(new ChannelInitializer<SocketChannel>() {
                    @Override
                    protected void initChannel(SocketChannel ch) {
                        ConnectionContext conn = new ConnectionContext(connectionIds.incrementAndGet(), ch.remoteAddress());
                        InetAddress peer = ch.remoteAddress() == null ? null : ch.remoteAddress().getAddress();
                        String refusal = handshakes.tryEnter(peer);
                        if (refusal != null) {
                            logRefusal(conn, refusal);
                            ch.close();
                            return;
                        }
                        connections.add(ch);
                        ch.pipeline().addLast("decoder", new OptionDecoder(false, ch::isWritable));
                        ch.pipeline().addLast("haggler", new OptionHaggler(context, conn, peer));
                        log.debug("{} connected", conn);
                    }
                });
        try {
            if (Epoll.isAvailable()) {
                // A consumer node that died without closing its connections must not hold them (and
                // its writer claim) for the kernel's default two hours: dropped after about a minute.
                bootstrap.childOption(EpollChannelOption.TCP_KEEPIDLE, 30)
                        .childOption(EpollChannelOption.TCP_KEEPINTVL, 10)
                        .childOption(EpollChannelOption.TCP_KEEPCNT, 3)
                        .childOption(EpollChannelOption.TCP_USER_TIMEOUT, 60_000);
            }
            listener = bootstrap.bind(address).sync().channel();
        } catch (Exception e) {
            if (e instanceof InterruptedException ie) {
                throw ie;
            }
            throw new IOException("cannot listen on " + address.getHostString() + ":" + address.getPort() + ": "
                    + e.getMessage(), e);
        }
        log.info("listening on {} ({} transport, {} I/O threads, TLS {}, buffer budget {} MiB), exports: {}",
                listener.localAddress(), Epoll.isAvailable() ? "epoll" : "nio", settings.ioThreads(), describe(tls),
                budget.capacity() >> 20,
                String.join(", ", exports.all().stream().map(e -> e.name() + " (" + e.size() + " bytes"
                        + (e.readOnly() ? ", read-only" : "") + ")").toList()));
    }

    /** One line per refused connection, except in a flood: then at most one a second, with the count. */
    private void logRefusal(ConnectionContext conn, String reason) {
        long now = System.nanoTime();
        long last = lastRefusalLog.get();
        if (now - last >= REFUSAL_LOG_INTERVAL_NANOS && lastRefusalLog.compareAndSet(last, now)) {
            long more = unloggedRefusals.getAndSet(0);
            log.warn("{} refused: {}{}", conn, reason, more == 0 ? "" : " (" + more + " more refused in the last second)");
        } else {
            unloggedRefusals.incrementAndGet();
        }
    }

    /** Bytes of request and reply data the server's connections hold now (see {@link BufferBudget}). */
    public long bufferedBytes() {
        return budget.used();
    }

    /** Connections in the handshake now. */
    public int handshaking() {
        return handshakes.inHandshake();
    }

    private static String describe(ServerTls tls) {
        String mode = tls.mode().name().toLowerCase(java.util.Locale.ROOT);
        return switch (tls.credentials()) {
            case null -> mode;
            case ServerTlsCredentials.Psk p -> mode + " with PSK";
            case ServerTlsCredentials.X509 x -> mode + " with X.509";
        };
    }

    /** The bound port, useful when binding to port 0. */
    public int port() {
        return ((InetSocketAddress) listener.localAddress()).getPort();
    }

    /** Connections of {@code exportName} in transmission now (0 for an unknown export). */
    public int activeConnections(String exportName) {
        return exports.find(exportName).map(Export::activeConnections).orElse(0);
    }

    /**
     * Stops accepting, lets in-flight requests finish (new ones get ESHUTDOWN), closes every
     * connection, makes all writes durable and closes the exports.
     */
    public void shutdownGracefully() {
        if (shuttingDown) {
            return;
        }
        shuttingDown = true;
        log.info("shutting down: no new connections, waiting for {} connection(s) to finish in-flight requests",
                connections.size());
        if (listener != null) {
            listener.close().awaitUninterruptibly();
        }
        long deadline = System.nanoTime() + settings.shutdownGrace().toNanos();
        for (Channel ch : connections) {
            ch.eventLoop().execute(() -> {
                ch.config().setAutoRead(false);
                closeWhenIdle(ch, deadline);
            });
        }
        connections.newCloseFuture().awaitUninterruptibly(settings.shutdownGrace().toMillis() + 1000);
        for (Export export : exports.all()) {
            try {
                export.backend().flush();
            } catch (IOException e) {
                log.error("export={} final flush failed: {}", export.name(), e.getMessage());
            }
        }
        close();
        log.info("shutdown complete");
    }

    private static void closeWhenIdle(Channel ch, long deadline) {
        TransmissionHandler transmission = ch.pipeline().get(TransmissionHandler.class);
        if (transmission == null || transmission.idle() || System.nanoTime() > deadline) {
            ch.close();
        } else {
            ch.eventLoop().schedule(() -> closeWhenIdle(ch, deadline), 10, TimeUnit.MILLISECONDS);
        }
    }

    @Override
    public void close() {
        shuttingDown = true;
        if (listener != null) {
            listener.close().awaitUninterruptibly();
        }
        connections.close().awaitUninterruptibly();
        io.shutdown();
        try {
            io.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        bossGroup.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
        workerGroup.shutdownGracefully(0, 1, TimeUnit.SECONDS).awaitUninterruptibly();
        try {
            exports.close();
        } catch (IOException e) {
            log.error("closing exports failed: {}", e.getMessage());
        }
    }

    private static ThreadFactory daemonThreads(String prefix) {
        AtomicInteger n = new AtomicInteger();
        return r -> {
            Thread t = new Thread(r, prefix + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
    }
}
