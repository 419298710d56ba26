package io.kubenbd.node.client;

import io.kubenbd.node.protocol.BlockDescriptor;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.Limits;
import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.ReplyChunk;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.ReplyType;
import io.kubenbd.node.protocol.RequestHeader;
import io.netty.buffer.Unpooled;

import java.io.DataInputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * The transmission phase's replies, held to the requests in flight. The client trusts the
 * server with nothing: every length is checked against what the reply type and the request
 * allow before a byte of it is allocated, every chunk against the request it claims to
 * answer (its cookie, the reply style negotiated, the chunk types the command takes, the
 * range it read, the contexts negotiated), and the number of chunks, descriptors and bytes
 * one reply may hold is bounded. A violation is an {@link NbdProtocolException}; the stream
 * position is lost with it, so the caller must drop the connection.
 */
final class ReplyReader {
    /** Most data one reply may carry: a READ's own length, and never more than this. */
    static final long MAX_REPLY_DATA = 64L << 20;
    /** Most block descriptors in one reply (the spec's per-chunk cap, here over all of a reply's chunks). */
    static final int MAX_DESCRIPTORS = 1 << 20;
    /** Chunks every reply may have, besides one per 512 bytes of the request and one per context. */
    static final int BASE_CHUNKS = 64;
    /** Error chunks kept (with their messages) per reply; later ones only fail it. */
    static final int KEPT_ERRORS = 16;
    /** Error chunk fields before the message: error (4), message length (2). */
    private static final int ERROR_HEADER = 6;
    /** Fields that an unknown error chunk type may carry after its message. */
    private static final int UNKNOWN_ERROR_TRAILER = 64;

    private final ReplyStyle style;
    private final Set<Integer> contexts;
    private final Map<Long, InFlight> inFlight = new HashMap<>();

    /**
     * @param style    what the handshake negotiated: it decides which reply magic numbers are allowed
     * @param contexts the meta context ids NBD_OPT_SET_META_CONTEXT returned
     */
    ReplyReader(ReplyStyle style, Set<Integer> contexts) {
        this.style = style;
        this.contexts = Set.copyOf(contexts);
    }

    /**
     * Registers a request about to be sent; only replies to registered requests are accepted.
     * NBD_CMD_DISC gets no reply and is not registered.
     *
     * @param payload the request's payload or null (the payload form of BLOCK_STATUS carries its effect length)
     * @throws IllegalArgumentException when the cookie is already in flight (the caller's mistake, not the server's)
     */
    void expect(RequestHeader request, byte[] payload) {
        if (request.type() == CommandType.DISC) {
            return;
        }
        if (inFlight.containsKey(request.cookie())) {
            throw new IllegalArgumentException("cookie " + request.cookie() + " is already in flight");
        }
        long effectLength = request.length();
        if (request.type() == CommandType.BLOCK_STATUS && request.hasFlag(CommandFlags.PAYLOAD_LEN)) {
            effectLength = payload != null && payload.length >= 8 ? ByteBuffer.wrap(payload).getLong() : 0;
        }
        inFlight.put(request.cookie(), new InFlight(request, effectLength, contexts.size()));
    }

    /** Reads until some request's reply is complete and returns it. */
    Reply read(DataInputStream in) throws IOException {
        while (true) {
            int magic = in.readInt();
            Reply done = switch (magic) {
                case Magic.SIMPLE_REPLY -> readSimple(in);
                case Magic.STRUCTURED_REPLY -> {
                    if (style != ReplyStyle.STRUCTURED) {
                        throw violation("a structured reply chunk, but " + negotiated());
                    }
                    yield readChunk(in, false);
                }
                case Magic.EXTENDED_REPLY -> {
                    if (style != ReplyStyle.EXTENDED) {
                        throw violation("an extended reply chunk, but " + negotiated());
                    }
                    yield readChunk(in, true);
                }
                default -> throw violation("bad reply magic 0x" + Integer.toHexString(magic));
            };
            if (done != null) {
                return done;
            }
        }
    }

    private String negotiated() {
        return switch (style) {
            case SIMPLE -> "only simple replies were negotiated";
            case STRUCTURED -> "structured replies (not extended headers) were negotiated";
            case EXTENDED -> "extended headers were negotiated";
        };
    }

    private Reply readSimple(DataInputStream in) throws IOException {
        int error = in.readInt();
        long cookie = in.readLong();
        if (style == ReplyStyle.EXTENDED) {
            throw violation("a simple reply (cookie " + cookie + "), but extended headers were negotiated");
        }
        InFlight request = inFlight(cookie);
        RequestHeader header = request.header;
        if (style == ReplyStyle.STRUCTURED && header.type() == CommandType.READ) {
            throw violation("a simple reply to " + describe(header) + ", but structured replies were negotiated");
        }
        if (request.chunks > 0) {
            throw violation("a simple reply in the middle of the structured reply to " + describe(header));
        }
        if (error == 0 && header.type() == CommandType.BLOCK_STATUS) {
            throw violation("a successful simple reply to " + describe(header) + " (block status comes in status chunks)");
        }
        List<ReplyChunk> chunks = new ArrayList<>(1);
        if (error != 0) {
            chunks.add(new ReplyChunk.Error(NbdError.fromCode(error), ""));
        } else if (header.type() == CommandType.READ) {
            long length = header.length();
            if (Long.compareUnsigned(length, MAX_REPLY_DATA) > 0) {
                throw violation("a simple reply to " + describe(header) + " would carry more than "
                        + MAX_REPLY_DATA + " bytes");
            }
            byte[] data = new byte[(int) length];
            in.readFully(data);
            chunks.add(new ReplyChunk.OffsetData(header.offset(), Unpooled.wrappedBuffer(data)));
        }
        inFlight.remove(cookie);
        return new Reply(cookie, header.offset(), chunks);
    }

    private Reply readChunk(DataInputStream in, boolean extended) throws IOException {
        int flags = in.readUnsignedShort();
        int type = in.readUnsignedShort();
        long cookie = in.readLong();
        long offset = extended ? in.readLong() : 0;
        long length = extended ? in.readLong() : Integer.toUnsignedLong(in.readInt());
        InFlight request = inFlight(cookie);
        RequestHeader header = request.header;
        if (extended && offset != header.offset()) {
            throw violation("an extended reply chunk with offset " + Long.toUnsignedString(offset) + " for "
                    + describe(header) + " (it must echo the request's offset)");
        }
        if (++request.chunks > request.chunkBudget) {
            throw violation("more than " + request.chunkBudget + " chunks in the reply to " + describe(header));
        }
        switch (type) {
            case ReplyType.NONE -> {
                if (length != 0 || (flags & ReplyType.FLAG_DONE) == 0) {
                    throw violation("NBD_REPLY_TYPE_NONE needs length 0 and the DONE flag, got length "
                            + Long.toUnsignedString(length) + " and flags 0x" + Integer.toHexString(flags));
                }
            }
            case ReplyType.OFFSET_DATA -> readData(in, request, length);
            case ReplyType.OFFSET_HOLE -> readHole(in, request, length);
            case ReplyType.BLOCK_STATUS, ReplyType.BLOCK_STATUS_EXT -> readBlockStatus(in, request, type, length);
            default -> {
                if (!ReplyType.isError(type)) {
                    throw violation("unknown reply chunk type " + type + " in the reply to " + describe(header));
                }
                readError(in, request, type, length);
            }
        }
        if ((flags & ReplyType.FLAG_DONE) == 0) {
            return null;
        }
        inFlight.remove(cookie);
        return request.complete();
    }

    private void readData(DataInputStream in, InFlight request, long length) throws IOException {
        allowOnly(request, CommandType.READ, "NBD_REPLY_TYPE_OFFSET_DATA");
        long size = length - 8;
        if (length <= 8 || Long.compareUnsigned(size, request.header.length()) > 0) {
            throw violation("NBD_REPLY_TYPE_OFFSET_DATA of " + Long.toUnsignedString(length)
                    + " bytes lies outside " + describe(request.header));
        }
        if (request.data + size > MAX_REPLY_DATA) {
            throw violation("NBD_REPLY_TYPE_OFFSET_DATA would bring the reply to " + describe(request.header)
                    + " over " + MAX_REPLY_DATA + " bytes of data");
        }
        long at = in.readLong();
        request.cover(at, size, "NBD_REPLY_TYPE_OFFSET_DATA");
        byte[] data = new byte[(int) size];
        in.readFully(data);
        request.data += size;
        request.result.add(new ReplyChunk.OffsetData(at, Unpooled.wrappedBuffer(data)));
    }

    private void readHole(DataInputStream in, InFlight request, long length) throws IOException {
        allowOnly(request, CommandType.READ, "NBD_REPLY_TYPE_OFFSET_HOLE");
        if (length != 12) {
            throw violation("NBD_REPLY_TYPE_OFFSET_HOLE of " + Long.toUnsignedString(length) + " bytes (it has 12)");
        }
        long at = in.readLong();
        long size = Integer.toUnsignedLong(in.readInt());
        if (size == 0) {
            throw violation("an empty NBD_REPLY_TYPE_OFFSET_HOLE in the reply to " + describe(request.header));
        }
        request.cover(at, size, "NBD_REPLY_TYPE_OFFSET_HOLE");
        // The record's length is an int; a hole of 2 GiB or more (32 bits unsigned on the wire) becomes two.
        long split = Math.min(size, Integer.MAX_VALUE);
        request.result.add(new ReplyChunk.OffsetHole(at, (int) split));
        if (split < size) {
            request.result.add(new ReplyChunk.OffsetHole(at + split, (int) (size - split)));
        }
    }

    private void readBlockStatus(DataInputStream in, InFlight request, int type, long length) throws IOException {
        boolean ext = type == ReplyType.BLOCK_STATUS_EXT;
        String name = ext ? "NBD_REPLY_TYPE_BLOCK_STATUS_EXT" : "NBD_REPLY_TYPE_BLOCK_STATUS";
        allowOnly(request, CommandType.BLOCK_STATUS, name);
        if (ext != (style == ReplyStyle.EXTENDED)) {
            throw violation(name + ", but " + negotiated());
        }
        int fixed = ext ? 8 : 4;
        int size = ext ? 16 : 8;
        if (Long.compareUnsigned(length, fixed + size) < 0 || (length - fixed) % size != 0
                || Long.compareUnsigned((length - fixed) / size, MAX_DESCRIPTORS) > 0) {
            throw violation(name + " of " + Long.toUnsignedString(length) + " bytes is not " + fixed + " + " + size
                    + "n bytes with 1 <= n <= " + MAX_DESCRIPTORS + " descriptors");
        }
        int count = (int) ((length - fixed) / size);
        int id = in.readInt();
        if (ext) {
            long announced = Integer.toUnsignedLong(in.readInt());
            if (announced != count) {
                throw violation(name + " announces " + announced + " descriptors in a chunk that holds " + count);
            }
        }
        if (!contexts.contains(id)) {
            throw violation(name + " for context id " + Integer.toUnsignedString(id) + ", which was not negotiated");
        }
        if (!request.statusContexts.add(id)) {
            throw violation("a second " + name + " for context id " + id + " in the reply to " + describe(request.header));
        }
        if (request.descriptors + count > MAX_DESCRIPTORS) {
            throw violation("more than " + MAX_DESCRIPTORS + " block descriptors in the reply to " + describe(request.header));
        }
        request.descriptors += count;
        boolean one = request.header.hasFlag(CommandFlags.REQ_ONE);
        if (one && count != 1) {
            throw violation(count + " block descriptors with NBD_CMD_FLAG_REQ_ONE (it takes exactly one)");
        }
        long effect = request.effectLength;
        long sum = 0;
        List<BlockDescriptor> descriptors = new ArrayList<>(Math.min(count, 1024));
        for (int i = 0; i < count; i++) {
            long extent = ext ? in.readLong() : Integer.toUnsignedLong(in.readInt());
            long status = ext ? in.readLong() : Integer.toUnsignedLong(in.readInt());
            if (extent == 0 || extent < 0) {
                throw violation("a block descriptor of length " + Long.toUnsignedString(extent));
            }
            if (one && Long.compareUnsigned(extent, effect) > 0) {
                throw violation("a block descriptor of " + extent + " bytes for a request of "
                        + Long.toUnsignedString(effect) + " bytes with NBD_CMD_FLAG_REQ_ONE");
            }
            if (i > 0 && Long.compareUnsigned(sum, effect) >= 0) {
                throw violation("block descriptors after the first " + i + " already covered the "
                        + Long.toUnsignedString(effect) + " bytes asked for");
            }
            sum += extent;
            descriptors.add(new BlockDescriptor(extent, status));
        }
        request.result.add(new ReplyChunk.BlockStatus(id, descriptors));
    }

    private void readError(DataInputStream in, InFlight request, int type, long length) throws IOException {
        boolean known = type == ReplyType.ERROR || type == ReplyType.ERROR_OFFSET;
        int trailer = type == ReplyType.ERROR_OFFSET ? 8 : known ? 0 : UNKNOWN_ERROR_TRAILER;
        int minimum = ERROR_HEADER + (type == ReplyType.ERROR_OFFSET ? 8 : 0);
        if (Long.compareUnsigned(length, minimum) < 0
                || Long.compareUnsigned(length, ERROR_HEADER + Limits.MAX_STRING + trailer) > 0) {
            throw violation("error chunk type 0x" + Integer.toHexString(type) + " of " + Long.toUnsignedString(length)
                    + " bytes (at least " + minimum + ", and a message of at most " + Limits.MAX_STRING + " bytes)");
        }
        int error = in.readInt();
        int messageLength = in.readUnsignedShort();
        if (messageLength > length - minimum) {
            throw violation("an error message length of " + messageLength + " bytes in an error chunk of " + length
                    + " bytes");
        }
        if (error == 0) {
            throw violation("an error chunk with error value 0 in the reply to " + describe(request.header));
        }
        byte[] message = new byte[messageLength];
        in.readFully(message);
        if (type == ReplyType.ERROR_OFFSET) {
            long at = in.readLong();
            int command = request.header.type();
            if (command == CommandType.FLUSH || command == CommandType.DISC || command > CommandType.BLOCK_STATUS) {
                throw violation("NBD_REPLY_TYPE_ERROR_OFFSET in the reply to " + describe(request.header));
            }
            long relative = at - request.header.offset();
            if (Long.compareUnsigned(relative, request.header.length()) >= 0) {
                throw violation("NBD_REPLY_TYPE_ERROR_OFFSET at " + Long.toUnsignedString(at) + " lies outside "
                        + describe(request.header));
            }
        }
        in.skipNBytes(length - minimum - messageLength);
        if (++request.errors <= KEPT_ERRORS) {
            request.result.add(new ReplyChunk.Error(NbdError.fromCode(error),
                    new String(message, StandardCharsets.UTF_8)));
        }
    }

    private InFlight inFlight(long cookie) throws NbdProtocolException {
        InFlight request = inFlight.get(cookie);
        if (request == null) {
            throw violation("a reply for cookie " + Long.toUnsignedString(cookie) + ", which no request in flight has");
        }
        return request;
    }

    private static void allowOnly(InFlight request, int command, String chunk) throws NbdProtocolException {
        if (request.header.type() != command) {
            throw violation(chunk + " in the reply to " + describe(request.header));
        }
    }

    static String describe(RequestHeader header) {
        return "NBD_CMD_" + CommandType.name(header.type()) + " (offset " + Long.toUnsignedString(header.offset())
                + ", length " + Long.toUnsignedString(header.length()) + ")";
    }

    private static NbdProtocolException violation(String what) {
        return new NbdProtocolException("server sent " + what);
    }

    /** What arrived so far for one request. */
    private static final class InFlight {
        final RequestHeader header;
        /** BLOCK_STATUS's effect length (in the payload of the payload form), else the header's length. */
        final long effectLength;
        final int chunkBudget;
        final List<ReplyChunk> result = new ArrayList<>();
        /** Bytes of a READ that content chunks described, relative to its offset: start to end, merged. */
        final TreeMap<Long, Long> covered = new TreeMap<>(Long::compareUnsigned);
        final Set<Integer> statusContexts = new HashSet<>();
        long coveredBytes;
        long data;
        int chunks;
        int contentChunks;
        int errors;
        int descriptors;

        InFlight(RequestHeader header, long effectLength, int contexts) {
            this.header = header;
            this.effectLength = effectLength;
            long sized = Long.compareUnsigned(header.length(), MAX_REPLY_DATA) > 0 ? MAX_REPLY_DATA : header.length();
            this.chunkBudget = BASE_CHUNKS + (int) (sized / 512) + contexts;
        }

        /** Checks that {@code size} bytes at {@code at} lie in the request and overlap nothing before, and records them. */
        void cover(long at, long size, String chunk) throws NbdProtocolException {
            long start = at - header.offset();
            long length = header.length();
            if (Long.compareUnsigned(start, length) >= 0 || Long.compareUnsigned(size, length - start) > 0) {
                throw violation(chunk + " of " + size + " bytes at " + Long.toUnsignedString(at) + " lies outside "
                        + describe(header));
            }
            if (header.hasFlag(CommandFlags.DF) && contentChunks > 0) {
                throw violation("a second content chunk for " + describe(header) + " with NBD_CMD_FLAG_DF");
            }
            long end = start + size;
            var before = covered.floorEntry(start);
            var after = covered.ceilingEntry(start);
            if ((before != null && Long.compareUnsigned(before.getValue(), start) > 0)
                    || (after != null && Long.compareUnsigned(after.getKey(), end) < 0)) {
                throw violation(chunk + " at " + Long.toUnsignedString(at) + " overlaps an earlier chunk of "
                        + describe(header));
            }
            if (before != null && before.getValue() == start) {
                start = before.getKey();
            }
            if (after != null && after.getKey() == end) {
                end = after.getValue();
                covered.remove(after.getKey());
            }
            covered.put(start, end);
            coveredBytes += size;
            contentChunks++;
        }

        Reply complete() throws NbdProtocolException {
            if (errors == 0) {
                if (header.type() == CommandType.READ && coveredBytes != header.length()) {
                    throw violation("a successful reply to " + describe(header) + " that covered only "
                            + coveredBytes + " bytes");
                }
                if (header.type() == CommandType.BLOCK_STATUS && statusContexts.isEmpty()) {
                    throw violation("a successful reply to " + describe(header) + " without block status");
                }
            }
            return new Reply(header.cookie(), header.offset(), result);
        }
    }
}
