package io.kubenbd.node.protocol;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.DecoderException;
import io.netty.handler.codec.TooLongFrameException;

import java.util.List;

/**
 * Frames transmission requests, compact or extended. A WRITE's length is its payload
 * length with or without NBD_CMD_FLAG_PAYLOAD_LEN; other commands carry a payload only
 * with that flag and extended headers. Payloads are sliced out of the
 * cumulation without copying. A compact WRITE longer than {@link Limits#MAX_PAYLOAD} is
 * skipped as it streams in and answered with EINVAL; an extended request announcing such a
 * payload is a protocol violation (the spec says hang up), as is a wrong magic number.
 * Each request is framed only once its {@link RequestGate} admits it, so a consumer at its
 * limit stops framing at once, not after the rest of the buffered input.
 */
public final class RequestDecoder extends PausableDecoder {
    private static final int COMPACT_HEADER = 28;
    private static final int EXTENDED_HEADER = 32;

    private enum State { HEADER, PAYLOAD, SKIP_PAYLOAD, FAILED }

    private final boolean extended;
    private final RequestGate gate;
    private State state = State.HEADER;
    private RequestHeader header;
    private long remaining;

    public RequestDecoder(boolean extended) {
        this(extended, RequestGate.OPEN);
    }

    public RequestDecoder(boolean extended, RequestGate gate) {
        this.extended = extended;
        this.gate = gate;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (state == State.FAILED) {
            in.skipBytes(in.readableBytes());
            return;
        }
        try {
            decodeRequests(in, out);
        } catch (DecoderException e) {
            // The stream position is lost: nothing after a framing error may become a request, neither in
            // later reads nor when the decoder drains its input as the channel closes.
            state = State.FAILED;
            in.skipBytes(in.readableBytes());
            throw e;
        }
    }

    private void decodeRequests(ByteBuf in, List<Object> out) {
        while (true) {
            switch (state) {
                case FAILED -> {
                    return;
                }
                case HEADER -> {
                    if (!readHeader(in, out)) {
                        return;
                    }
                }
                case PAYLOAD -> {
                    if (in.readableBytes() < remaining) {
                        return;
                    }
                    ByteBuf payload = in.readRetainedSlice((int) remaining);
                    state = State.HEADER;
                    out.add(withPayload(header, payload));
                }
                case SKIP_PAYLOAD -> {
                    int skip = (int) Math.min(remaining, in.readableBytes());
                    in.skipBytes(skip);
                    remaining -= skip;
                    if (remaining > 0) {
                        return;
                    }
                    state = State.HEADER;
                    out.add(new Request.Invalid(header, NbdError.EINVAL, "write payload of "
                            + Long.toUnsignedString(header.length()) + " bytes exceeds the maximum of "
                            + Limits.MAX_PAYLOAD));
                }
            }
            if (!out.isEmpty()) {
                return; // one request per pass lets the consumer apply back-pressure between requests
            }
        }
    }

    private boolean readHeader(ByteBuf in, List<Object> out) {
        int headerLength = extended ? EXTENDED_HEADER : COMPACT_HEADER;
        if (in.readableBytes() < headerLength) {
            return false;
        }
        int start = in.readerIndex();
        int magic = in.readInt();
        int expected = extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST;
        if (magic != expected) {
            throw new CorruptedFrameException("request magic 0x" + Integer.toHexString(magic) + ", expected 0x"
                    + Integer.toHexString(expected));
        }
        int flags = in.readUnsignedShort();
        int type = in.readUnsignedShort();
        long cookie = in.readLong();
        long offset = in.readLong();
        long length = extended ? in.readLong() : in.readUnsignedInt();
        header = new RequestHeader(flags, type, cookie, offset, length);

        // A WRITE always carries its data: qemu 10's client sends extended WRITEs without
        // NBD_CMD_FLAG_PAYLOAD_LEN, and qemu-nbd accepts them, so the flag is optional here.
        boolean hasPayload = type == CommandType.WRITE || (extended && header.hasFlag(CommandFlags.PAYLOAD_LEN));
        if (hasPayload && extended && Long.compareUnsigned(length, Limits.MAX_PAYLOAD) > 0) {
            throw new TooLongFrameException("request payload of " + Long.toUnsignedString(length)
                    + " bytes exceeds the maximum of " + Limits.MAX_PAYLOAD);
        }
        // Asked before a payload is buffered, so the consumer can account for it first.
        if (!gate.admit(header)) {
            in.readerIndex(start);
            header = null;
            return false;
        }
        if (!hasPayload) {
            out.add(withoutPayload(header));
            return true;
        }
        if (Long.compareUnsigned(length, Limits.MAX_PAYLOAD) > 0) {
            remaining = length;
            state = State.SKIP_PAYLOAD;
            return true;
        }
        remaining = length;
        state = State.PAYLOAD;
        return true;
    }

    private Request withoutPayload(RequestHeader h) {
        if (!extended && h.hasFlag(CommandFlags.PAYLOAD_LEN)) {
            return new Request.Invalid(h, NbdError.EINVAL, "NBD_CMD_FLAG_PAYLOAD_LEN without extended headers");
        }
        return switch (h.type()) {
            case CommandType.READ -> new Request.Read(h);
            case CommandType.DISC -> new Request.Disconnect(h);
            case CommandType.FLUSH -> new Request.Flush(h);
            case CommandType.TRIM -> new Request.Trim(h);
            case CommandType.CACHE -> new Request.Cache(h);
            case CommandType.WRITE_ZEROES -> new Request.WriteZeroes(h);
            case CommandType.BLOCK_STATUS -> new Request.BlockStatus(h, h.length(), null);
            default -> new Request.Invalid(h, NbdError.EINVAL, "unknown command " + h.type());
        };
    }

    private Request withPayload(RequestHeader h, ByteBuf payload) {
        if (h.type() == CommandType.WRITE) {
            if (!extended && h.hasFlag(CommandFlags.PAYLOAD_LEN)) {
                payload.release();
                return new Request.Invalid(h, NbdError.EINVAL, "NBD_CMD_FLAG_PAYLOAD_LEN without extended headers");
            }
            return new Request.Write(h, payload);
        }
        try {
            if (h.type() == CommandType.BLOCK_STATUS) {
                int length = payload.readableBytes();
                if (length < 8 || (length - 8) % 4 != 0) {
                    return new Request.Invalid(h, NbdError.EINVAL, "block status payload of " + length
                            + " bytes is not 8 + 4n");
                }
                long effectLength = payload.readLong();
                int[] ids = new int[(length - 8) / 4];
                for (int i = 0; i < ids.length; i++) {
                    ids[i] = payload.readInt();
                }
                return new Request.BlockStatus(h, effectLength, ids);
            }
            return new Request.Invalid(h, NbdError.EINVAL, CommandType.name(h.type()) + " takes no payload");
        } finally {
            payload.release();
        }
    }
}
