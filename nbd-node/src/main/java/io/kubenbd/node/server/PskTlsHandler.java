package io.kubenbd.node.server;

import io.kubenbd.node.tls.PskTlsServerEndpoint;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.CompositeByteBuf;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.util.ReferenceCountUtil;
import org.bouncycastle.tls.TlsServerProtocol;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * Runs Bouncy Castle's non-blocking TLS engine for one connection: socket bytes go in with
 * {@code offerInput}, records to send come out of {@code readOutput}, plaintext comes out of
 * {@code readInput}. The engine is not thread-safe; netty calls this handler on the
 * connection's event loop only, which keeps every engine call on one thread.
 */
final class PskTlsHandler extends ChannelDuplexHandler {
    private static final Logger log = LoggerFactory.getLogger(PskTlsHandler.class);

    private final TlsServerProtocol engine = new TlsServerProtocol();
    private final PskTlsServerEndpoint endpoint;
    private final ConnectionContext conn;
    /** Plaintext encrypted per engine call; also bounds the scratch array. */
    private static final int ENCRYPT_BATCH = 64 * 1024;

    private byte[] scratch = new byte[16 * 1024];
    private CompositeByteBuf pending;
    private final List<ChannelPromise> pendingPromises = new ArrayList<>();
    private boolean established;
    private boolean failed;

    PskTlsHandler(PskTlsServerEndpoint endpoint, ConnectionContext conn) {
        this.endpoint = endpoint;
        this.conn = conn;
    }

    @Override
    public void handlerAdded(ChannelHandlerContext ctx) throws IOException {
        engine.accept(endpoint);
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (!(msg instanceof ByteBuf in)) {
            ctx.fireChannelRead(msg);
            return;
        }
        try {
            if (failed) {
                return;
            }
            byte[] bytes = scratch(Math.min(in.readableBytes(), ENCRYPT_BATCH));
            while (in.isReadable()) {
                int n = Math.min(in.readableBytes(), bytes.length);
                in.readBytes(bytes, 0, n);
                engine.offerInput(bytes, 0, n);
            }
        } catch (IOException e) {
            fail(ctx, e);
            return;
        } finally {
            ReferenceCountUtil.release(msg);
        }
        sendOutput(ctx, ctx.voidPromise());
        ctx.flush();
        if (!established && engine.isConnected() && !engine.isHandshaking()) {
            established = true;
            conn.tls(endpoint.negotiated().toString());
            log.info("{} TLS established: {}, PSK identity '{}'", conn, endpoint.negotiated(), endpoint.identity());
        }
        int available = engine.getAvailableInputBytes();
        if (available > 0) {
            ByteBuf plain = ctx.alloc().buffer(available);
            engine.readInput(plain.nioBuffer(0, available), available);
            plain.writerIndex(available);
            ctx.fireChannelRead(plain);
        }
        if (engine.isClosed()) {
            ctx.close();
        }
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise) {
        if (!(msg instanceof ByteBuf out)) {
            ctx.write(msg, promise);
            return;
        }
        if (failed) {
            out.release();
            promise.tryFailure(new IOException("TLS session failed"));
            return;
        }
        // Reply headers and data arrive as separate buffers: gathering them until flush puts
        // them in the same TLS records instead of one record per buffer.
        if (pending == null) {
            pending = ctx.alloc().compositeBuffer(Integer.MAX_VALUE);
        }
        pending.addComponent(true, out);
        if (!promise.isVoid()) {
            pendingPromises.add(promise);
        }
        if (pending.readableBytes() >= ENCRYPT_BATCH) {
            encryptPending(ctx);
        }
    }

    @Override
    public void flush(ChannelHandlerContext ctx) {
        encryptPending(ctx);
        ctx.flush();
    }

    private void encryptPending(ChannelHandlerContext ctx) {
        if (pending == null) {
            return;
        }
        ByteBuf plain = pending;
        pending = null;
        List<ChannelPromise> promises = List.copyOf(pendingPromises);
        pendingPromises.clear();
        try {
            byte[] bytes = scratch(Math.min(plain.readableBytes(), ENCRYPT_BATCH));
            while (plain.isReadable()) {
                int n = Math.min(plain.readableBytes(), bytes.length);
                plain.readBytes(bytes, 0, n);
                engine.writeApplicationData(bytes, 0, n);
            }
        } catch (IOException e) {
            promises.forEach(p -> p.tryFailure(e));
            fail(ctx, e);
            return;
        } finally {
            plain.release();
        }
        ChannelPromise written = promises.isEmpty() ? ctx.voidPromise() : ctx.newPromise();
        if (!promises.isEmpty()) {
            written.addListener(f -> promises.forEach(p -> {
                if (f.isSuccess()) {
                    p.trySuccess();
                } else {
                    p.tryFailure(f.cause());
                }
            }));
        }
        sendOutput(ctx, written);
    }

    @Override
    public void close(ChannelHandlerContext ctx, ChannelPromise promise) {
        if (!failed && !engine.isClosed()) {
            encryptPending(ctx);
            try {
                engine.close(); // queues close_notify
                sendOutput(ctx, ctx.voidPromise());
                ctx.flush();
            } catch (IOException e) {
                log.debug("{} TLS close_notify failed: {}", conn, e.getMessage());
            }
        }
        ctx.close(promise);
    }

    @Override
    public void handlerRemoved(ChannelHandlerContext ctx) {
        if (pending != null) {
            pending.release();
            pending = null;
        }
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        if (!established && !failed) {
            log.info("{} TLS handshake abandoned by the client", conn);
        }
        ctx.fireChannelInactive();
    }

    /** Moves whatever records the engine produced to the socket, completing {@code promise} with them. */
    private void sendOutput(ChannelHandlerContext ctx, ChannelPromise promise) {
        int available = engine.getAvailableOutputBytes();
        if (available == 0) {
            if (!promise.isVoid()) {
                // Completes once the records written before it are on the wire, not now: the
                // transmission handler counts unread replies by these promises.
                ctx.write(io.netty.buffer.Unpooled.EMPTY_BUFFER, promise);
            }
            return;
        }
        ByteBuf records = ctx.alloc().directBuffer(available);
        engine.readOutput(records.nioBuffer(0, available), available);
        records.writerIndex(available);
        ctx.write(records, promise);
    }

    /** Sends the alert the engine queued, then hangs up: the spec's hard disconnect. */
    private void fail(ChannelHandlerContext ctx, IOException e) {
        failed = true;
        sendOutput(ctx, ctx.voidPromise());
        ctx.flush();
        String reason = endpoint.failure() != null ? endpoint.failure() : e.getMessage();
        log.info("{} TLS {} failed, disconnecting: {}", conn, established ? "session" : "handshake", reason);
        ctx.close();
    }

    private byte[] scratch(int length) {
        if (scratch.length < length) {
            scratch = new byte[Integer.highestOneBit(length - 1) << 1];
        }
        return scratch;
    }
}
