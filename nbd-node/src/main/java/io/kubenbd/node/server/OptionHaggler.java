package io.kubenbd.node.server;

import io.kubenbd.node.protocol.ClientFlags;
import io.kubenbd.node.protocol.OptionDecoder;
import io.kubenbd.node.tls.PskTlsServerEndpoint;
import io.kubenbd.node.tls.ServerTlsCredentials;
import io.kubenbd.node.tls.TlsMode;
import io.netty.channel.ChannelHandler;
import io.netty.handler.ssl.SslHandler;
import io.kubenbd.node.protocol.HandshakeFlags;
import io.kubenbd.node.protocol.InfoType;
import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.OptionReplyCodec;
import io.kubenbd.node.protocol.OptionReplyType;
import io.kubenbd.node.protocol.OptionRequest;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.protocol.ReplyEncoder;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.RequestDecoder;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.util.concurrent.ScheduledFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * The handshake of one connection: greeting, client flags, then option after option until
 * NBD_OPT_GO or NBD_OPT_EXPORT_NAME hand the connection to a {@link TransmissionHandler}.
 * Negotiated state (reply style, selected meta contexts) lives here until then.
 */
final class OptionHaggler extends ChannelInboundHandlerAdapter {
    private static final Logger log = LoggerFactory.getLogger(OptionHaggler.class);

    private final ServerContext server;
    private final ConnectionContext conn;
    private ReplyStyle style = ReplyStyle.SIMPLE;
    private boolean noZeroes;
    /** Contexts from the last NBD_OPT_SET_META_CONTEXT, valid only for {@link #contextsExport}. */
    private List<MetaContext> contexts = List.of();
    private String contextsExport;
    private ScheduledFuture<?> timeout;
    private boolean tlsActive;
    /** The peer's address as counted in {@link HandshakeAdmission}; counted until transmission or close. */
    private final java.net.InetAddress peer;
    private boolean inHandshakeCount = true;
    private boolean resumeScheduled;

    OptionHaggler(ServerContext server, ConnectionContext conn, java.net.InetAddress peer) {
        this.server = server;
        this.conn = conn;
        this.peer = peer;
    }

    @Override
    public void channelActive(ChannelHandlerContext ctx) {
        ByteBuf greeting = ctx.alloc().buffer(18);
        greeting.writeLong(Magic.NBDMAGIC);
        greeting.writeLong(Magic.IHAVEOPT);
        greeting.writeShort(HandshakeFlags.FIXED_NEWSTYLE | HandshakeFlags.NO_ZEROES);
        ctx.writeAndFlush(greeting);
        long millis = server.settings().handshakeTimeout().toMillis();
        timeout = ctx.executor().schedule(() -> {
            log.info("{} handshake not finished after {} ms, disconnecting", conn, millis);
            ctx.close();
        }, millis, TimeUnit.MILLISECONDS);
        ctx.fireChannelActive();
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        cancelTimeout();
        leaveHandshakeCount();
        ctx.fireChannelInactive();
    }

    /**
     * A client that sends options without reading the replies: the decoder stops framing
     * options while the channel is not writable and reading stops; both go on once the
     * client has read enough of its replies.
     */
    @Override
    public void channelWritabilityChanged(ChannelHandlerContext ctx) {
        boolean writable = ctx.channel().isWritable();
        ctx.channel().config().setAutoRead(writable);
        if (writable && !resumeScheduled) {
            // Not from here: this event can fire inside the decoder's own output (a reply flushed).
            resumeScheduled = true;
            ctx.executor().execute(() -> {
                resumeScheduled = false;
                if (!ctx.isRemoved() && ctx.channel().isActive()) {
                    decodeBuffered(ctx);
                }
            });
        }
        ctx.fireChannelWritabilityChanged();
    }

    @Override
    public void channelReadComplete(ChannelHandlerContext ctx) {
        ctx.flush();
        ctx.fireChannelReadComplete();
    }

    private static void decodeBuffered(ChannelHandlerContext ctx) {
        ChannelHandlerContext decoder = ctx.pipeline().context("decoder");
        if (decoder != null && decoder.handler() instanceof io.kubenbd.node.protocol.PausableDecoder pausable) {
            try {
                pausable.decodeBuffered(decoder);
            } catch (Exception e) {
                ctx.fireExceptionCaught(e);
            }
            ctx.flush();
        }
    }

    private void leaveHandshakeCount() {
        if (inHandshakeCount) {
            inHandshakeCount = false;
            server.handshakes().leave(peer);
        }
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        if (cause.getCause() instanceof javax.net.ssl.SSLException || cause instanceof javax.net.ssl.SSLException) {
            ctx.close(); // the handshake listener has logged it
            return;
        }
        if (ctx.channel().isActive()) {
            log.info("{} handshake protocol violation, disconnecting: {}", conn, cause.getMessage());
            ctx.close();
        }
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        switch (msg) {
            case ClientFlags flags -> clientFlags(ctx, flags);
            case OptionRequest option -> option(ctx, option);
            default -> ctx.fireChannelRead(msg);
        }
    }

    private void clientFlags(ChannelHandlerContext ctx, ClientFlags flags) {
        if (flags.unknownBits() != 0) {
            log.info("{} client flags 0x{} have unknown bits, disconnecting", conn, Integer.toHexString(flags.flags()));
            ctx.close();
            return;
        }
        if (!flags.fixedNewstyle()) {
            log.info("{} client does not speak fixed newstyle; only NBD_OPT_EXPORT_NAME will work", conn);
        }
        noZeroes = flags.noZeroes();
    }

    private void option(ChannelHandlerContext ctx, OptionRequest option) {
        int optionCode = option.option();
        if (server.shuttingDown() && !(option instanceof OptionRequest.Abort)) {
            reply(ctx, optionCode, error(OptionReplyType.ERR_SHUTDOWN, "server is shutting down"));
            return;
        }
        if (server.tls().mode() == TlsMode.REQUIRE && !tlsActive
                && optionCode != OptionType.STARTTLS && optionCode != OptionType.ABORT) {
            if (optionCode == OptionType.EXPORT_NAME) {
                log.info("{} NBD_OPT_EXPORT_NAME before the required TLS, disconnecting", conn);
                ctx.close();
            } else {
                reply(ctx, optionCode, error(OptionReplyType.ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS first"));
            }
            return;
        }
        switch (option) {
            case OptionRequest.ExportName(String name) -> exportName(ctx, name);
            case OptionRequest.Abort a -> {
                ctx.writeAndFlush(encode(ctx, optionCode, new OptionReply.Ack()))
                        .addListener(ChannelFutureListener.CLOSE);
                log.debug("{} client aborted the handshake", conn);
            }
            case OptionRequest.ListExports l -> {
                for (Export export : server.exports().all()) {
                    ctx.write(encode(ctx, optionCode,
                            new OptionReply.Server(export.name(), export.config().description())));
                }
                reply(ctx, optionCode, new OptionReply.Ack());
            }
            case OptionRequest.StartTls s -> {
                if (server.tls().mode() == TlsMode.OFF) {
                    reply(ctx, optionCode, error(OptionReplyType.ERR_POLICY, "TLS is not enabled on this server"));
                } else if (tlsActive) {
                    reply(ctx, optionCode, error(OptionReplyType.ERR_INVALID, "TLS is already in use"));
                } else {
                    startTls(ctx);
                }
            }
            case OptionRequest.Info info -> info(ctx, info);
            case OptionRequest.StructuredReply s -> {
                if (style == ReplyStyle.EXTENDED) {
                    reply(ctx, optionCode, error(OptionReplyType.ERR_EXT_HEADER_REQD,
                            "extended headers already negotiated"));
                } else if (style == ReplyStyle.STRUCTURED) {
                    reply(ctx, optionCode, error(OptionReplyType.ERR_INVALID,
                            "structured replies already negotiated"));
                } else {
                    style = ReplyStyle.STRUCTURED;
                    reply(ctx, optionCode, new OptionReply.Ack());
                }
            }
            case OptionRequest.ExtendedHeaders e -> {
                if (style == ReplyStyle.EXTENDED) {
                    reply(ctx, optionCode, error(OptionReplyType.ERR_INVALID,
                            "extended headers already negotiated"));
                } else {
                    style = ReplyStyle.EXTENDED;
                    reply(ctx, optionCode, new OptionReply.Ack());
                }
            }
            case OptionRequest.MetaContext meta -> metaContext(ctx, meta);
            case OptionRequest.Malformed(int code, String reason) -> {
                if (code == OptionType.SET_META_CONTEXT) {
                    clearContexts();
                }
                reply(ctx, code, error(OptionReplyType.ERR_INVALID, reason));
            }
            case OptionRequest.Oversized(int code, long length) -> {
                if (code == OptionType.SET_META_CONTEXT) {
                    clearContexts();
                }
                reply(ctx, code, error(OptionReplyType.ERR_TOO_BIG,
                        OptionType.name(code) + " data of " + length + " bytes is too large"));
            }
            case OptionRequest.Unsupported(int code) -> reply(ctx, code,
                    error(OptionReplyType.ERR_UNSUP, "option " + code + " is not supported"));
        }
    }

    /**
     * Acknowledges STARTTLS in plaintext, then puts the TLS engine in front of the option
     * decoder. Bytes the decoder already holds are the start of the client's handshake and go
     * to the engine; everything negotiated before TLS is forgotten, as the spec requires.
     */
    private void startTls(ChannelHandlerContext ctx) {
        ctx.writeAndFlush(encode(ctx, OptionType.STARTTLS, new OptionReply.Ack()));
        OptionDecoder plaintextDecoder = (OptionDecoder) ctx.pipeline().get("decoder");
        ByteBuf early = plaintextDecoder.takeBuffered();
        ctx.pipeline().replace("decoder", "decoder", new OptionDecoder(true, ctx.channel()::isWritable));
        ChannelHandler engine = switch (server.tls().credentials()) {
            case ServerTlsCredentials.Psk psk -> new PskTlsHandler(new PskTlsServerEndpoint(psk.keys().current()), conn);
            case ServerTlsCredentials.X509 x509 -> {
                SslHandler ssl = x509.context().current().newHandler(ctx.alloc());
                ssl.handshakeFuture().addListener(done -> {
                    if (done.isSuccess()) {
                        conn.tls(ssl.engine().getSession().getProtocol() + " " + ssl.engine().getSession().getCipherSuite());
                        log.info("{} TLS established: {}", conn, conn.tls());
                    } else {
                        log.info("{} TLS handshake failed, disconnecting: {}", conn, rootMessage(done.cause()));
                    }
                });
                yield ssl;
            }
        };
        ctx.pipeline().addFirst("tls", engine);
        tlsActive = true;
        style = ReplyStyle.SIMPLE;
        clearContexts();
        if (early.isReadable()) {
            ctx.pipeline().fireChannelRead(early);
        } else {
            early.release();
        }
    }

    private static String rootMessage(Throwable t) {
        while (t.getCause() != null) {
            t = t.getCause();
        }
        return t.getMessage();
    }

    private void exportName(ChannelHandlerContext ctx, String name) {
        conn.exportName(name);
        if (style == ReplyStyle.EXTENDED) {
            log.info("{} NBD_OPT_EXPORT_NAME after extended headers, disconnecting", conn);
            ctx.close();
            return;
        }
        Optional<Export> found = server.exports().find(name);
        if (found.isEmpty()) {
            log.info("{} NBD_OPT_EXPORT_NAME for an unknown export, disconnecting", conn);
            ctx.close();
            return;
        }
        Export export = found.get();
        if (!export.tryAcquireConnection()) {
            log.info("{} connection limit of {} reached, disconnecting", conn, export.config().maxConnections());
            ctx.close();
            return;
        }
        boolean contextsValid = name.equals(contextsExport);
        int flags = export.transmissionFlags(style, false);
        ByteBuf out = ctx.alloc().buffer(134);
        out.writeLong(export.size());
        out.writeShort(flags);
        if (!noZeroes) {
            out.writeZero(124);
        }
        ctx.write(out);
        enterTransmission(ctx, export, contextsValid ? contexts : List.of(), false, false);
    }

    private void info(ChannelHandlerContext ctx, OptionRequest.Info info) {
        conn.exportName(info.name());
        Optional<Export> found = server.exports().find(info.name());
        if (found.isEmpty()) {
            reply(ctx, info.option(), error(OptionReplyType.ERR_UNKNOWN,
                    "export '" + info.name() + "' not present"));
            return;
        }
        Export export = found.get();
        boolean contextsValid = info.name().equals(contextsExport) && !contexts.isEmpty();
        // As qemu-nbd does: INFO advertises the payload form whenever extended headers are on,
        // GO only when block status is usable at all.
        boolean payloadForm = info.go() ? contextsValid : true;
        boolean honoursBlockSize = info.requests().contains(InfoType.BLOCK_SIZE);
        if (info.go() && !export.tryAcquireConnection()) {
            reply(ctx, info.option(), error(OptionReplyType.ERR_POLICY, "export '" + export.name()
                    + "' already has its maximum of " + export.config().maxConnections() + " connections"));
            return;
        }
        if (info.requests().contains(InfoType.NAME)) {
            ctx.write(encode(ctx, info.option(), new OptionReply.InfoName(export.name())));
        }
        if (info.requests().contains(InfoType.DESCRIPTION) && !export.config().description().isEmpty()) {
            ctx.write(encode(ctx, info.option(), new OptionReply.InfoDescription(export.config().description())));
        }
        ctx.write(encode(ctx, info.option(), export.blockSize(honoursBlockSize)));
        int flags = export.transmissionFlags(style, payloadForm);
        ctx.write(encode(ctx, info.option(), new OptionReply.InfoExport(export.size(), flags)));
        if (!info.go()) {
            reply(ctx, info.option(), new OptionReply.Ack());
            return;
        }
        ctx.write(encode(ctx, info.option(), new OptionReply.Ack()));
        enterTransmission(ctx, export, contextsValid ? contexts : List.of(), payloadForm, honoursBlockSize);
    }

    private void metaContext(ChannelHandlerContext ctx, OptionRequest.MetaContext meta) {
        if (meta.set()) {
            clearContexts();
        }
        if (style == ReplyStyle.SIMPLE) {
            reply(ctx, meta.option(), error(OptionReplyType.ERR_INVALID,
                    OptionType.name(meta.option()) + " needs structured replies or extended headers first"));
            return;
        }
        Optional<Export> found = server.exports().find(meta.exportName());
        if (found.isEmpty()) {
            reply(ctx, meta.option(), error(OptionReplyType.ERR_UNKNOWN,
                    "export '" + meta.exportName() + "' not present"));
            return;
        }
        List<MetaContext> matches = new ArrayList<>();
        for (MetaContext offered : found.get().metaContexts()) {
            String name = offered.name();
            boolean match = meta.set()
                    ? meta.queries().contains(name)
                    : meta.queries().isEmpty() || meta.queries().stream().anyMatch(q -> listQueryMatches(q, name));
            if (match) {
                matches.add(offered);
            }
        }
        for (MetaContext match : matches) {
            ctx.write(encode(ctx, meta.option(), new OptionReply.MetaContext(meta.set() ? match.id() : 0,
                    match.provider().name())));
        }
        if (meta.set()) {
            contexts = List.copyOf(matches);
            contextsExport = meta.exportName();
        }
        reply(ctx, meta.option(), new OptionReply.Ack());
    }

    /** A list query names a context exactly, or a namespace prefix ending in a colon ("base:", "qemu:dirty-bitmap:"). */
    private static boolean listQueryMatches(String query, String name) {
        return query.equals(name) || (query.endsWith(":") && name.startsWith(query));
    }

    private void clearContexts() {
        contexts = List.of();
        contextsExport = null;
    }

    private void enterTransmission(ChannelHandlerContext ctx, Export export, List<MetaContext> selected,
                                   boolean payloadForm, boolean honoursBlockSize) {
        cancelTimeout();
        leaveHandshakeCount();
        ctx.flush();
        log.info("{} transmission: {} replies, {} meta context(s), flags 0x{}", conn,
                style.name().toLowerCase(java.util.Locale.ROOT), selected.size(),
                Integer.toHexString(export.transmissionFlags(style, payloadForm)));
        TransmissionHandler transmission = new TransmissionHandler(server, conn, export, style, selected,
                payloadForm, honoursBlockSize);
        ctx.channel().config().setWriteBufferWaterMark(NbdServer.TRANSMISSION_WATER_MARK);
        ctx.channel().config().setAutoRead(true);
        ctx.pipeline().addBefore(ctx.name(), "reply-encoder", new ReplyEncoder(style));
        ctx.pipeline().replace(this, "transmission", transmission);
        ctx.pipeline().replace("decoder", "decoder", new RequestDecoder(style == ReplyStyle.EXTENDED, transmission));
    }

    private void cancelTimeout() {
        if (timeout != null) {
            timeout.cancel(false);
            timeout = null;
        }
    }

    private void reply(ChannelHandlerContext ctx, int option, OptionReply reply) {
        if (reply instanceof OptionReply.Error(int type, String message)) {
            log.debug("{} {} -> {}: {}", conn, OptionType.name(option), OptionReplyType.name(type), message);
        }
        // Flushed once per read (channelReadComplete), not per option: a client pipelining many
        // options costs one syscall per batch.
        ctx.write(encode(ctx, option, reply));
    }

    private static OptionReply error(int type, String message) {
        return new OptionReply.Error(type, message);
    }

    private static ByteBuf encode(ChannelHandlerContext ctx, int option, OptionReply reply) {
        ByteBuf out = ctx.alloc().buffer(64);
        OptionReplyCodec.encode(option, reply, out);
        return out;
    }
}
