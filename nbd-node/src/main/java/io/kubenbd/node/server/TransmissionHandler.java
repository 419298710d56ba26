package io.kubenbd.node.server;

import io.kubenbd.node.protocol.BlockDescriptor;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.Limits;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.ReplyChunk;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.Request;
import io.kubenbd.node.protocol.RequestHeader;
import io.kubenbd.node.storage.Extent;
import io.kubenbd.node.storage.StorageBackend;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.util.ReferenceCountUtil;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.RejectedExecutionException;

/**
 * Transmission phase of one connection. Requests are validated on the event loop (cheap
 * errors are answered at once), storage work runs on the server's I/O executor, and each
 * reply is written as soon as its request is done, so replies may overtake each other.
 * Reading pauses while too many requests or bytes are in flight, or while the socket
 * cannot take more output, which bounds the memory one client can make the server hold.
 */
final class TransmissionHandler extends ChannelInboundHandlerAdapter {
    private static final Logger log = LoggerFactory.getLogger(TransmissionHandler.class);
    /** Extents looked up per structured read; more fragmented ranges are sent as data. */
    private static final int READ_EXTENTS = 64;

    private final ServerContext server;
    private final ConnectionContext conn;
    private final Export export;
    private final StorageBackend backend;
    private final ReplyStyle style;
    private final List<MetaContext> contexts;
    private final boolean payloadFormAdvertised;
    private final int minimumBlock;

    // Event-loop confined state.
    private ChannelHandlerContext ctx;
    private int inFlight;
    private long inFlightBytes;
    private boolean disconnecting;
    private boolean flushScheduled;
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
    }

    @Override
    public void handlerAdded(ChannelHandlerContext ctx) {
        this.ctx = ctx;
        if (ctx.channel().remoteAddress() instanceof InetSocketAddress peer) {
            peerHost = peer.getAddress();
        }
        conn.replies(style.name().toLowerCase(java.util.Locale.ROOT));
        export.attach(conn);
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
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
        updateAutoRead();
        ctx.fireChannelWritabilityChanged();
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (!(msg instanceof Request request)) {
            ctx.fireChannelRead(msg);
            return;
        }
        if (disconnecting) {
            ReferenceCountUtil.release(request);
            return; // the client promised to send nothing after NBD_CMD_DISC
        }
        if (request instanceof Request.Disconnect) {
            disconnecting = true;
            log.debug("{} client sent NBD_CMD_DISC", conn);
            closeWhenIdle();
            return;
        }
        if (server.shuttingDown()) {
            ReferenceCountUtil.release(request);
            send(Reply.error(request.header(), NbdError.ESHUTDOWN, "server is shutting down"));
            return;
        }
        String invalid = validate(request);
        if (invalid != null) {
            ReferenceCountUtil.release(request);
            NbdError error = request instanceof Request.Invalid bad ? bad.error() : NbdError.EINVAL;
            log.debug("{} {} rejected: {}", conn, request.header().describe(), invalid);
            send(Reply.error(request.header(), error, invalid));
            return;
        }
        if (changesData(request) && !admitWriter(request)) {
            return;
        }
        long bytes = bytesOf(request);
        inFlight++;
        inFlightBytes += bytes;
        updateAutoRead();
        try {
            server.io().execute(() -> {
                Reply reply = execute(request);
                ctx.executor().execute(() -> complete(reply, bytes));
            });
        } catch (RejectedExecutionException e) {
            ReferenceCountUtil.release(request);
            complete(Reply.error(request.header(), NbdError.ESHUTDOWN, "server is shutting down"), bytes);
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

    private void complete(Reply reply, long bytes) {
        inFlight--;
        inFlightBytes -= bytes;
        send(reply);
        updateAutoRead();
        if (disconnecting) {
            closeWhenIdle();
        }
    }

    private void send(Reply reply) {
        boolean failed = reply.error() != null;
        if (failed) {
            errors++;
        }
        export.statistics().request(failed);
        conn.countRequest();
        ctx.write(reply, ctx.voidPromise());
        // Completions queued behind this task are written before the flush runs: one syscall for a batch.
        if (!flushScheduled) {
            flushScheduled = true;
            ctx.executor().execute(() -> {
                flushScheduled = false;
                ctx.flush();
            });
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
        boolean read = !disconnecting && inFlight < server.settings().maxInFlight()
                && inFlightBytes < server.settings().maxInFlightBytes() && ctx.channel().isWritable();
        if (ctx.channel().config().isAutoRead() != read) {
            ctx.channel().config().setAutoRead(read);
        }
    }

    /** Whether the server is idle on this connection (for graceful shutdown). */
    boolean idle() {
        return inFlight == 0;
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
            send(Reply.error(h, NbdError.EPERM, refusal));
            return false;
        }
        if (!holdsWriterClaim) {
            holdsWriterClaim = true;
            log.info("{} claimed the export for writing from {}", conn, peerHost == null ? "?" : peerHost.getHostAddress());
        }
        send(Reply.ok(h));
        return false;
    }

    private static long bytesOf(Request request) {
        return switch (request) {
            case Request.Read r -> r.header().length();
            case Request.Write w -> w.header().length();
            default -> 0;
        };
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
