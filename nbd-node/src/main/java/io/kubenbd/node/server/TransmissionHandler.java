package io.kubenbd.node.server;

import io.kubenbd.node.protocol.BlockDescriptor;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.Limits;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.PausableDecoder;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.ReplyChunk;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.Request;
import io.kubenbd.node.protocol.RequestGate;
import io.kubenbd.node.protocol.RequestHeader;
import io.kubenbd.node.storage.Extent;
import io.kubenbd.node.storage.StorageBackend;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.util.ReferenceCountUtil;
import io.netty.util.concurrent.ScheduledFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * Transmission phase of one connection. Requests are validated on the event loop (cheap
 * errors are answered at once), storage work runs on the server's I/O executor, and each
 * reply is written as soon as its request is done, so replies may overtake each other.
 * The decoder asks {@link #admit} before framing each request: a request waits, unread,
 * while this connection has too many requests or bytes in flight, while its output is not
 * being read, or while the server's shared {@link BufferBudget} has no room for its data.
 * A connection whose replies go unread for the write timeout is closed, freeing its buffers.
 */
final class TransmissionHandler extends ChannelInboundHandlerAdapter implements RequestGate, BufferBudget.Waiter {
    private static final Logger log = LoggerFactory.getLogger(TransmissionHandler.class);
    /** Extents looked up per structured read; more fragmented ranges are sent as data. */
    private static final int READ_EXTENTS = 64;
    /** What a BLOCK_STATUS reply may need per context, at most (16-byte extended descriptors). */
    private static final long BLOCK_STATUS_REPLY = 16L * Limits.MAX_EXTENTS_PER_CHUNK;

    private final ServerContext server;
    private final ConnectionContext conn;
    private final Export export;
    private final StorageBackend backend;
    private final ReplyStyle style;
    private final List<MetaContext> contexts;
    private final boolean payloadFormAdvertised;
    private final int minimumBlock;
    private final BufferBudget budget;
    private final Runnable resumeTask = this::resume;
    private final Runnable flushTask = this::flushBatch;

    // Event-loop confined state.
    private ChannelHandlerContext ctx;
    /** Requests admitted and not yet answered. */
    private int inFlight;
    /** Bytes this connection holds of the budget: admitted data, and replies not yet written. */
    private long held;
    /** The charge of the request admitted by {@link #admit} and not yet received by {@link #channelRead}. */
    private long admittedCharge;
    /** An admitted request's payload is still arriving: it counts in flight but is not running. */
    private boolean awaitingPayload;
    private long payloadStalledSince;
    /** The decoder stopped at a request {@link #admit} refused; it is resumed when that may change. */
    private boolean heldBack;
    private boolean resumeScheduled;
    /** Queued at the budget for {@link #wanted}; then {@link #granted} reserved them for the next admit. */
    private boolean budgetWaiting;
    private volatile long wanted;
    private volatile boolean wantedHoldingNothing;
    private long grantedBytes = -1;
    private boolean closed;
    private boolean disconnecting;
    private boolean flushScheduled;
    /** Charges of the replies written since the last flush; released when that batch is on the wire. */
    private long batchCharge;
    private int batchesUnwritten;
    private long lastWriteProgress;
    private int requestsSinceCheck;
    private long lastRequestSeen;
    private ScheduledFuture<?> timer;
    private long errors;
    private InetAddress peerHost;
    private boolean holdsWriterClaim;
    private boolean writeRefusalLogged;

    TransmissionHandler(ServerContext server, ConnectionContext conn, Export export, ReplyStyle style,
                        List<MetaContext> contexts, boolean payloadFormAdvertised, boolean honoursBlockSize) {
        this.server = server;
        this.conn = conn;
        this.export = export;
        this.backend = export.backend();
        this.style = style;
        this.contexts = contexts;
        this.payloadFormAdvertised = payloadFormAdvertised;
        this.minimumBlock = honoursBlockSize ? backend.minimumBlockSize() : 1;
        this.budget = server.budget();
    }

    @Override
    public void handlerAdded(ChannelHandlerContext ctx) {
        this.ctx = ctx;
        if (ctx.channel().remoteAddress() instanceof InetSocketAddress peer) {
            peerHost = peer.getAddress();
        }
        conn.replies(style.name().toLowerCase(java.util.Locale.ROOT));
        export.attach(conn);
        budget.join();
        long now = System.nanoTime();
        lastRequestSeen = now;
        lastWriteProgress = now;
        Duration idle = server.settings().idleTimeout();
        Duration write = server.settings().writeTimeout();
        Duration shortest = idle.isZero() || write.compareTo(idle) < 0 ? write : idle;
        long period = Math.clamp(shortest.toMillis() / 4, 50, 5000);
        timer = ctx.executor().scheduleAtFixedRate(this::checkTimeouts, period, period, TimeUnit.MILLISECONDS);
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        closed = true;
        budget.leave();
        if (timer != null) {
            timer.cancel(false);
        }
        if (budgetWaiting) {
            budgetWaiting = false;
            if (!budget.cancel(this)) {
                // Granted meanwhile: the grant task (queued behind this) gives the bytes back.
                log.debug("{} budget granted while closing", conn);
            }
        }
        releaseHeld(admittedCharge);
        admittedCharge = 0;
        if (grantedBytes >= 0) {
            budget.release(grantedBytes);
            grantedBytes = -1;
        }
        export.detach(conn);
        export.releaseConnection();
        if (holdsWriterClaim && export.writerClaim().release(conn)) {
            log.info("{} writer claim released: the node's last claiming connection closed", conn);
        }
        log.info("{} closed after {} requests ({} failed)", conn, conn.requests(), errors);
        ctx.fireChannelInactive();
    }

    @Override
    public void channelWritabilityChanged(ChannelHandlerContext ctx) {
        if (ctx.channel().isWritable()) {
            scheduleResume();
        }
        updateAutoRead();
        ctx.fireChannelWritabilityChanged();
    }

    /**
     * Asked by the decoder before it frames each request. Counts an admitted request in flight
     * and charges its data to this connection and to the server's budget.
     */
    @Override
    public boolean admit(RequestHeader h) {
        if (closed || disconnecting) {
            return holdBack();
        }
        long charge = chargeOf(h);
        if (grantedBytes >= 0) {
            long granted = grantedBytes;
            grantedBytes = -1;
            if (granted == charge) {
                admitted(charge);
                return true;
            }
            budget.release(granted); // cannot happen: the same request is framed again
        }
        if (budgetWaiting || inFlight >= server.settings().maxInFlight()
                || (held > 0 && held + charge > Math.min(server.settings().maxInFlightBytes(), budget.share()))
                || !ctx.channel().isWritable()) {
            return holdBack();
        }
        if (charge > 0 && !budget.tryAcquire(charge, held == 0)) {
            budgetWaiting = true;
            wanted = charge;
            wantedHoldingNothing = held == 0;
            budget.await(this);
            return holdBack();
        }
        admitted(charge);
        return true;
    }

    /** Stops framing and reading: what the client sends meanwhile waits in its socket, not here. */
    private boolean holdBack() {
        heldBack = true;
        if (ctx.channel().config().isAutoRead()) {
            ctx.channel().config().setAutoRead(false);
        }
        return false;
    }

    private void admitted(long charge) {
        awaitingPayload = true;
        inFlight++;
        held += charge;
        admittedCharge = charge;
        requestsSinceCheck++;
    }

    private long chargeOf(RequestHeader h) {
        long bytes = switch (h.type()) {
            case CommandType.READ, CommandType.WRITE -> h.length() <= Limits.MAX_PAYLOAD ? h.length() : 0;
            case CommandType.BLOCK_STATUS -> h.hasFlag(CommandFlags.REQ_ONE) ? 0 : BLOCK_STATUS_REPLY * contexts.size();
            default -> 0;
        };
        return bytes == 0 ? 0 : budget.charge(bytes);
    }

    @Override
    public long wanted() {
        return wanted;
    }

    @Override
    public boolean holdsNothing() {
        return wantedHoldingNothing;
    }

    /** Called by the budget, on any thread, once {@link #wanted} bytes are reserved for this connection. */
    @Override
    public void granted() {
        try {
            ctx.executor().execute(() -> {
                budgetWaiting = false;
                if (closed) {
                    budget.release(wanted);
                    return;
                }
                grantedBytes = wanted;
                scheduleResume();
            });
        } catch (RejectedExecutionException e) {
            budget.release(wanted); // the server is stopping: the connection will not read again
        }
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (!(msg instanceof Request request)) {
            ctx.fireChannelRead(msg);
            return;
        }
        long charge = admittedCharge;
        admittedCharge = 0;
        awaitingPayload = false;
        if (disconnecting) {
            ReferenceCountUtil.release(request);
            answered(charge);
            return; // the client promised to send nothing after NBD_CMD_DISC
        }
        if (request instanceof Request.Disconnect) {
            disconnecting = true;
            answered(charge);
            log.debug("{} client sent NBD_CMD_DISC", conn);
            closeWhenIdle();
            return;
        }
        if (server.shuttingDown()) {
            ReferenceCountUtil.release(request);
            answered(charge);
            send(Reply.error(request.header(), NbdError.ESHUTDOWN, "server is shutting down"), 0);
            return;
        }
        String invalid = validate(request);
        if (invalid != null) {
            ReferenceCountUtil.release(request);
            answered(charge);
            NbdError error = request instanceof Request.Invalid bad ? bad.error() : NbdError.EINVAL;
            log.debug("{} {} rejected: {}", conn, request.header().describe(), invalid);
            send(Reply.error(request.header(), error, invalid), 0);
            return;
        }
        if (changesData(request) && !admitWriter(request)) {
            answered(charge);
            return;
        }
        try {
            server.io().execute(() -> {
                Reply reply = execute(request);
                ctx.executor().execute(() -> complete(reply, charge));
            });
        } catch (RejectedExecutionException e) {
            ReferenceCountUtil.release(request);
            complete(Reply.error(request.header(), NbdError.ESHUTDOWN, "server is shutting down"), charge);
        }
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        if (!ctx.channel().isActive()) {
            return; // already closing; the first cause was logged
        }
        log.info("{} protocol violation, disconnecting: {}", conn, rootMessage(cause));
        ctx.close();
    }

    /** A request answered without running: it leaves the in-flight count and gives its charge back. */
    private void answered(long charge) {
        inFlight--;
        releaseHeld(charge);
        scheduleResume();
    }

    private void complete(Reply reply, long charge) {
        inFlight--;
        // The charge stays held until the reply is on the wire: a client that does not read keeps it.
        send(reply, charge);
        scheduleResume();
        if (disconnecting) {
            closeWhenIdle();
        }
    }

    private void send(Reply reply, long charge) {
        boolean failed = reply.error() != null;
        if (failed) {
            errors++;
        }
        export.statistics().request(failed);
        conn.countRequest();
        ctx.write(reply, ctx.voidPromise());
        batchCharge += charge;
        // Completions queued behind this task are written before the flush runs: one syscall for a batch.
        if (!flushScheduled) {
            flushScheduled = true;
            ctx.executor().execute(flushTask);
        }
    }

    /**
     * Flushes the replies written since the last flush, followed by an empty marker whose
     * promise completes once they are all on the wire (writes complete in order): then their
     * charges go back to the budget, and the write timeout sees progress.
     */
    private void flushBatch() {
        flushScheduled = false;
        long charge = batchCharge;
        batchCharge = 0;
        if (batchesUnwritten++ == 0) {
            lastWriteProgress = System.nanoTime();
        }
        ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(done -> {
            batchesUnwritten--;
            lastWriteProgress = System.nanoTime();
            releaseHeld(charge);
            scheduleResume();
        });
    }

    private void releaseHeld(long charge) {
        if (charge > 0) {
            held -= charge;
            budget.release(charge);
        }
    }

    /** Lets the decoder try the request it stopped at again, from a task of its own. */
    private void scheduleResume() {
        if (heldBack && !resumeScheduled && !closed) {
            resumeScheduled = true;
            ctx.executor().execute(resumeTask);
        }
    }

    private void resume() {
        resumeScheduled = false;
        if (closed || !heldBack) {
            return;
        }
        heldBack = false;
        ChannelHandlerContext decoder = ctx.pipeline().context("decoder");
        if (decoder != null && decoder.handler() instanceof PausableDecoder pausable) {
            try {
                pausable.decodeBuffered(decoder);
            } catch (Exception e) {
                ctx.fireExceptionCaught(e);
                return;
            }
        }
        updateAutoRead();
    }

    private void checkTimeouts() {
        if (closed) {
            return;
        }
        long now = System.nanoTime();
        Duration write = server.settings().writeTimeout();
        // No request admitted since the last check and one still waiting for its payload: the same one.
        if (awaitingPayload && requestsSinceCheck == 0) {
            if (payloadStalledSince == 0) {
                payloadStalledSince = now;
            } else if (now - payloadStalledSince > write.toNanos()) {
                log.info("{} request payload not received for {} s ({} bytes held), disconnecting", conn,
                        write.toSeconds(), held);
                ctx.close();
                return;
            }
        } else {
            payloadStalledSince = 0;
        }
        if (requestsSinceCheck > 0) {
            requestsSinceCheck = 0;
            lastRequestSeen = now;
        }
        if (batchesUnwritten > 0 && now - lastWriteProgress > write.toNanos()) {
            log.info("{} replies not read for {} s ({} bytes held), disconnecting", conn, write.toSeconds(), held);
            ctx.close();
            return;
        }
        Duration idle = server.settings().idleTimeout();
        if (!idle.isZero() && inFlight == 0 && batchesUnwritten == 0 && now - lastRequestSeen > idle.toNanos()) {
            log.info("{} idle for {} s, disconnecting", conn, idle.toSeconds());
            ctx.close();
        }
    }

    private void closeWhenIdle() {
        if (inFlight == 0) {
            ctx.flush();
            ctx.close();
        } else {
            ctx.channel().config().setAutoRead(false);
        }
    }

    private void updateAutoRead() {
        boolean read = !disconnecting && !closed && !heldBack && !server.shuttingDown() && ctx.channel().isWritable();
        if (ctx.channel().config().isAutoRead() != read) {
            ctx.channel().config().setAutoRead(read);
        }
    }

    /**
     * Whether the server is idle on this connection (for graceful shutdown): nothing running.
     * A request whose payload was still arriving when reading stopped will never run.
     */
    boolean idle() {
        return inFlight == (awaitingPayload ? 1 : 0);
    }

    private static boolean changesData(Request request) {
        return request instanceof Request.Write || request instanceof Request.Trim || request instanceof Request.WriteZeroes;
    }

    /**
     * Applies the single-writer claim ({@link WriterClaim}) to a request that changes data:
     * answers a claim (a zero-length WRITE) or a refused request itself and returns false, or
     * returns true for a request to run.
     */
    private boolean admitWriter(Request request) {
        RequestHeader h = request.header();
        boolean claim = request instanceof Request.Write && h.length() == 0;
        String refusal = claim ? export.writerClaim().claim(conn, peerHost) : export.writerClaim().refusalFor(peerHost);
        if (refusal == null && !claim) {
            return true;
        }
        ReferenceCountUtil.release(request);
        if (refusal != null) {
            if (claim || !writeRefusalLogged) {
                writeRefusalLogged = !claim;
                log.warn("{} {} refused: {}", conn, claim ? "writer claim" : h.describe(), refusal);
            }
            send(Reply.error(h, NbdError.EPERM, refusal), 0);
            return false;
        }
        if (!holdsWriterClaim) {
            holdsWriterClaim = true;
            log.info("{} claimed the export for writing from {}", conn, peerHost == null ? "?" : peerHost.getHostAddress());
        }
        send(Reply.ok(h), 0);
        return false;
    }

    /** The reason to refuse a request, or null to run it. Mirrors qemu-nbd: EINVAL for all of these. */
    private String validate(Request request) {
        RequestHeader h = request.header();
        if (request instanceof Request.Invalid bad) {
            return bad.reason();
        }
        int valid = CommandFlags.FUA;
        switch (request) {
            case Request.Read r -> valid |= style.chunked() ? CommandFlags.DF : 0;
            case Request.Write w -> valid |= style == ReplyStyle.EXTENDED ? CommandFlags.PAYLOAD_LEN : 0;
            case Request.WriteZeroes z -> valid |= CommandFlags.NO_HOLE | CommandFlags.FAST_ZERO;
            case Request.BlockStatus b -> valid |= CommandFlags.REQ_ONE | (b.payloadForm() ? CommandFlags.PAYLOAD_LEN : 0);
            default -> { }
        }
        if ((h.flags() & ~valid) != 0) {
            return "unsupported flags 0x" + Integer.toHexString(h.flags() & ~valid) + " for " + CommandType.name(h.type());
        }
        boolean writes = request instanceof Request.Write || request instanceof Request.Trim
                || request instanceof Request.WriteZeroes;
        if (writes && export.readOnly()) {
            return "export is read-only";
        }
        if (request instanceof Request.Flush) {
            return null;
        }
        long length = request instanceof Request.BlockStatus b ? b.effectLength() : h.length();
        if (Long.compareUnsigned(h.offset(), export.size()) > 0
                || Long.compareUnsigned(length, export.size() - h.offset()) > 0) {
            return "request past the end of the export: offset " + Long.toUnsignedString(h.offset()) + " + length "
                    + Long.toUnsignedString(length) + " > size " + export.size();
        }
        if (request instanceof Request.Read && length > Limits.MAX_PAYLOAD) {
            return "read of " + length + " bytes exceeds the maximum of " + Limits.MAX_PAYLOAD;
        }
        if (minimumBlock > 1 && (h.offset() % minimumBlock != 0 || length % minimumBlock != 0)) {
            return "request not aligned to the minimum block size " + minimumBlock;
        }
        if (request instanceof Request.BlockStatus b) {
            return validateBlockStatus(b);
        }
        return null;
    }

    private String validateBlockStatus(Request.BlockStatus b) {
        if (contexts.isEmpty()) {
            return "no meta context was negotiated";
        }
        if (b.effectLength() == 0) {
            return "block status of length 0";
        }
        if (!b.payloadForm()) {
            return null;
        }
        if (!payloadFormAdvertised) {
            return "block status payload form was not negotiated";
        }
        if (b.contextIds().length == 0) {
            return "block status payload lists no context";
        }
        List<Integer> seen = new ArrayList<>();
        for (int id : b.contextIds()) {
            if (seen.contains(id)) {
                return "context id " + id + " repeated in block status payload";
            }
            if (contexts.stream().noneMatch(c -> c.id() == id)) {
                return "context id " + Integer.toUnsignedString(id) + " was not negotiated";
            }
            seen.add(id);
        }
        return null;
    }

    /** Runs on an I/O thread. */
    private Reply execute(Request request) {
        RequestHeader h = request.header();
        boolean changesData = changesData(request);
        try {
            return switch (request) {
                case Request.Read r -> {
                    Reply reply = read(h);
                    export.statistics().read(h.length());
                    yield reply;
                }
                case Request.Write w -> {
                    Reply reply = write(w);
                    export.statistics().written(h.length());
                    yield reply;
                }
                case Request.Flush f -> {
                    backend.flush();
                    yield Reply.ok(h);
                }
                case Request.Trim t -> {
                    if (h.length() > 0) {
                        backend.trim(h.offset(), h.length());
                    }
                    yield afterWrite(h);
                }
                case Request.Cache c -> {
                    if (h.length() > 0) {
                        backend.cache(h.offset(), h.length());
                    }
                    yield Reply.ok(h);
                }
                case Request.WriteZeroes z -> writeZeroes(h);
                case Request.BlockStatus b -> blockStatus(b);
                case Request.Disconnect d -> Reply.ok(h);
                case Request.Invalid i -> Reply.error(h, i.error(), i.reason());
            };
        } catch (IOException e) {
            NbdError error = StorageErrors.toNbd(e);
            log.warn("{} {} failed with {}: {}", conn, h.describe(), error, e.getMessage());
            return Reply.error(h, error, e.getMessage());
        } catch (RuntimeException e) {
            log.error("{} {} failed unexpectedly", conn, h.describe(), e);
            return Reply.error(h, NbdError.EIO, "internal server error");
        } catch (OutOfMemoryError e) {
            // Netty's direct-memory limit: refuse this request, keep the connection and the worker alive.
            log.warn("{} {} failed: out of buffer memory ({})", conn, h.describe(), e.getMessage());
            return Reply.error(h, NbdError.ENOMEM, "server is out of buffer memory");
        } finally {
            if (changesData) {
                // After the change (even a failed one may have changed part of the range) and before
                // the reply: a write lands in the bitmap that records when it completes, so a
                // checkpoint taken while it was under way cannot leave it in the frozen bitmap only,
                // copied by a backup before the data landed (as marking first did).
                export.markDirty(h.offset(), h.length());
            }
            ReferenceCountUtil.release(request);
        }
    }

    private Reply read(RequestHeader h) throws IOException {
        int length = (int) h.length();
        if (length == 0) {
            return Reply.ok(h);
        }
        if (!style.chunked() || h.hasFlag(CommandFlags.DF)) {
            return new Reply(h.cookie(), h.offset(), List.of(new ReplyChunk.OffsetData(h.offset(), readData(h.offset(), length))));
        }
        List<Extent> extents = backend.allocation(h.offset(), length, READ_EXTENTS);
        List<ReplyChunk> chunks = new ArrayList<>(extents.size());
        long position = h.offset();
        long end = h.offset() + length;
        try {
            for (Extent extent : extents) {
                long extentEnd = Math.min(end, position + extent.length());
                if (extent.zero()) {
                    chunks.add(new ReplyChunk.OffsetHole(position, (int) (extentEnd - position)));
                } else {
                    chunks.add(new ReplyChunk.OffsetData(position, readData(position, (int) (extentEnd - position))));
                }
                position = extentEnd;
                if (position >= end) {
                    break;
                }
            }
            if (position < end) {
                chunks.add(new ReplyChunk.OffsetData(position, readData(position, (int) (end - position))));
            }
        } catch (IOException | RuntimeException e) {
            chunks.forEach(c -> { if (c instanceof ReplyChunk.OffsetData d) d.data().release(); });
            throw e;
        }
        return new Reply(h.cookie(), h.offset(), chunks);
    }

    private ByteBuf readData(long offset, int length) throws IOException {
        ByteBuf buf = ctx.alloc().directBuffer(length, length);
        try {
            backend.read(offset, buf.nioBuffer(0, length));
            buf.writerIndex(length);
            return buf;
        } catch (IOException | RuntimeException e) {
            buf.release();
            throw e;
        }
    }

    private Reply write(Request.Write w) throws IOException {
        RequestHeader h = w.header();
        ByteBuf data = w.data();
        long position = h.offset();
        if (data.nioBufferCount() == 1) {
            backend.write(position, data.nioBuffer());
        } else {
            for (ByteBuffer part : data.nioBuffers()) {
                int n = part.remaining();
                backend.write(position, part);
                position += n;
            }
        }
        return afterWrite(h);
    }

    private Reply writeZeroes(RequestHeader h) throws IOException {
        if (h.length() == 0) {
            return Reply.ok(h);
        }
        boolean mayPunch = !h.hasFlag(CommandFlags.NO_HOLE);
        boolean fast = h.hasFlag(CommandFlags.FAST_ZERO);
        if (!backend.writeZeroes(h.offset(), h.length(), mayPunch, fast)) {
            return Reply.error(h, NbdError.ENOTSUP, "zeroing this range would not be faster than writing zeroes");
        }
        return afterWrite(h);
    }

    private Reply afterWrite(RequestHeader h) throws IOException {
        if (h.hasFlag(CommandFlags.FUA)) {
            backend.flush();
        }
        return Reply.ok(h);
    }

    private Reply blockStatus(Request.BlockStatus b) throws IOException {
        RequestHeader h = b.header();
        boolean one = h.hasFlag(CommandFlags.REQ_ONE);
        List<ReplyChunk> chunks = new ArrayList<>();
        for (MetaContext context : contexts) {
            if (b.payloadForm() && !contains(b.contextIds(), context.id())) {
                continue;
            }
            List<BlockDescriptor> descriptors = context.provider().describe(h.offset(), b.effectLength(),
                    one ? 1 : Limits.MAX_EXTENTS_PER_CHUNK);
            if (style != ReplyStyle.EXTENDED) {
                descriptors = fitIn32Bits(descriptors);
            }
            chunks.add(new ReplyChunk.BlockStatus(context.id(), descriptors));
        }
        return new Reply(h.cookie(), h.offset(), chunks);
    }

    /** Structured replies carry 32-bit lengths; the request length fits, so only a merged final run can overflow. */
    private static List<BlockDescriptor> fitIn32Bits(List<BlockDescriptor> descriptors) {
        long max = 0xFFFFFFFFL & ~511L;
        if (descriptors.stream().allMatch(d -> d.length() <= max)) {
            return descriptors;
        }
        List<BlockDescriptor> out = new ArrayList<>();
        for (BlockDescriptor d : descriptors) {
            if (d.length() > max) {
                out.add(new BlockDescriptor(max, d.status()));
                break; // the client asks again from where this answer ends
            }
            out.add(d);
        }
        return out;
    }

    private static boolean contains(int[] ids, int id) {
        for (int i : ids) {
            if (i == id) {
                return true;
            }
        }
        return false;
    }

    private static String rootMessage(Throwable t) {
        while (t.getCause() != null) {
            t = t.getCause();
        }
        return t.getClass().getSimpleName() + ": " + t.getMessage();
    }
}
