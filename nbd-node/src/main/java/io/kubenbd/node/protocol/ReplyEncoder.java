package io.kubenbd.node.protocol;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.MessageToMessageEncoder;

import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Writes {@link Reply}s in the negotiated style. Read data is passed on as its own buffer
 * behind a small header buffer, never copied. In the simple style an OFFSET_DATA chunk
 * becomes the read payload, an error chunk the error field, and holes are not allowed.
 */
@ChannelHandler.Sharable
public final class ReplyEncoder extends MessageToMessageEncoder<Reply> {
    private static final int MAX_MESSAGE = 4096;

    private final ReplyStyle style;

    public ReplyEncoder(ReplyStyle style) {
        super(Reply.class);
        this.style = style;
    }

    @Override
    protected void encode(ChannelHandlerContext ctx, Reply reply, List<Object> out) {
        encode(ctx.alloc(), reply, out);
    }

    /** Encodes into {@code out} as a list of buffers; public for tests and for the client's own use. */
    public void encode(ByteBufAllocator alloc, Reply reply, List<Object> out) {
        if (style == ReplyStyle.SIMPLE) {
            encodeSimple(alloc, reply, out);
            return;
        }
        List<ReplyChunk> chunks = reply.chunks();
        if (chunks.isEmpty()) {
            ByteBuf header = alloc.buffer(headerLength());
            writeChunkHeader(header, reply, ReplyType.FLAG_DONE, ReplyType.NONE, 0);
            out.add(header);
            return;
        }
        for (int i = 0; i < chunks.size(); i++) {
            int flags = i == chunks.size() - 1 ? ReplyType.FLAG_DONE : 0;
            encodeChunk(alloc, reply, chunks.get(i), flags, out);
        }
    }

    private void encodeChunk(ByteBufAllocator alloc, Reply reply, ReplyChunk chunk, int flags, List<Object> out) {
        switch (chunk) {
            case ReplyChunk.OffsetData(long offset, ByteBuf data) -> {
                ByteBuf header = alloc.buffer(headerLength() + 8);
                writeChunkHeader(header, reply, flags, ReplyType.OFFSET_DATA, 8L + data.readableBytes());
                header.writeLong(offset);
                out.add(header);
                out.add(data);
            }
            case ReplyChunk.OffsetHole(long offset, int length) -> {
                ByteBuf buf = alloc.buffer(headerLength() + 12);
                writeChunkHeader(buf, reply, flags, ReplyType.OFFSET_HOLE, 12);
                buf.writeLong(offset);
                buf.writeInt(length);
                out.add(buf);
            }
            case ReplyChunk.BlockStatus(int contextId, List<BlockDescriptor> descriptors) -> {
                boolean ext = style == ReplyStyle.EXTENDED;
                long payload = ext ? 8L + 16L * descriptors.size() : 4L + 8L * descriptors.size();
                ByteBuf buf = alloc.buffer(headerLength() + (int) payload);
                writeChunkHeader(buf, reply, flags, ext ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS, payload);
                buf.writeInt(contextId);
                if (ext) {
                    buf.writeInt(descriptors.size());
                }
                for (BlockDescriptor d : descriptors) {
                    if (ext) {
                        buf.writeLong(d.length());
                        buf.writeLong(d.status());
                    } else {
                        buf.writeInt((int) d.length());
                        buf.writeInt((int) d.status());
                    }
                }
                out.add(buf);
            }
            case ReplyChunk.Error(NbdError error, String message) -> {
                byte[] text = truncated(message);
                ByteBuf buf = alloc.buffer(headerLength() + 6 + text.length);
                writeChunkHeader(buf, reply, flags, ReplyType.ERROR, 6L + text.length);
                buf.writeInt(error.code());
                buf.writeShort(text.length);
                buf.writeBytes(text);
                out.add(buf);
            }
        }
    }

    private void encodeSimple(ByteBufAllocator alloc, Reply reply, List<Object> out) {
        NbdError error = reply.error();
        ByteBuf header = alloc.buffer(16);
        header.writeInt(Magic.SIMPLE_REPLY);
        header.writeInt(error == null ? 0 : error.code());
        header.writeLong(reply.cookie());
        out.add(header);
        for (ReplyChunk chunk : reply.chunks()) {
            switch (chunk) {
                case ReplyChunk.OffsetData(long offset, ByteBuf data) -> {
                    if (error == null) {
                        out.add(data);
                    } else {
                        data.release();
                    }
                }
                case ReplyChunk.Error e -> { }
                case ReplyChunk.OffsetHole h ->
                        throw new IllegalStateException("hole chunk in a simple reply");
                case ReplyChunk.BlockStatus b ->
                        throw new IllegalStateException("block status chunk in a simple reply");
            }
        }
    }

    private int headerLength() {
        return style == ReplyStyle.EXTENDED ? 32 : 20;
    }

    private void writeChunkHeader(ByteBuf buf, Reply reply, int flags, int type, long payloadLength) {
        if (style == ReplyStyle.EXTENDED) {
            buf.writeInt(Magic.EXTENDED_REPLY);
            buf.writeShort(flags);
            buf.writeShort(type);
            buf.writeLong(reply.cookie());
            buf.writeLong(reply.requestOffset());
            buf.writeLong(payloadLength);
        } else {
            buf.writeInt(Magic.STRUCTURED_REPLY);
            buf.writeShort(flags);
            buf.writeShort(type);
            buf.writeLong(reply.cookie());
            buf.writeInt((int) payloadLength);
        }
    }

    private static byte[] truncated(String message) {
        byte[] bytes = message.getBytes(StandardCharsets.UTF_8);
        if (bytes.length <= MAX_MESSAGE) {
            return bytes;
        }
        int end = MAX_MESSAGE;
        while (end > 0 && (bytes[end] & 0xC0) == 0x80) {
            end--; // bytes[end] continues a character: cut before that character starts
        }
        return java.util.Arrays.copyOf(bytes, end);
    }
}
