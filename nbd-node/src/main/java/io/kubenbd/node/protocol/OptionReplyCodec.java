package io.kubenbd.node.protocol;

import io.netty.buffer.ByteBuf;

import java.nio.charset.StandardCharsets;

/** Option reply messages: the server encodes them, the client decodes them. */
public final class OptionReplyCodec {
    /** Magic (8), option (4), reply type (4), length (4). */
    public static final int HEADER_LENGTH = 20;

    private OptionReplyCodec() {}

    public static void encode(int option, OptionReply reply, ByteBuf out) {
        out.writeLong(Magic.OPTION_REPLY);
        out.writeInt(option);
        out.writeInt(reply.type());
        int lengthIndex = out.writerIndex();
        out.writeInt(0);
        int start = out.writerIndex();
        switch (reply) {
            case OptionReply.Ack a -> { }
            case OptionReply.Server(String name, String description) -> {
                OptionCodec.writeString32(out, name);
                out.writeCharSequence(description, StandardCharsets.UTF_8);
            }
            case OptionReply.InfoExport(long size, int flags) -> {
                out.writeShort(InfoType.EXPORT);
                out.writeLong(size);
                out.writeShort(flags);
            }
            case OptionReply.InfoName(String name) -> {
                out.writeShort(InfoType.NAME);
                out.writeCharSequence(name, StandardCharsets.UTF_8);
            }
            case OptionReply.InfoDescription(String description) -> {
                out.writeShort(InfoType.DESCRIPTION);
                out.writeCharSequence(description, StandardCharsets.UTF_8);
            }
            case OptionReply.InfoBlockSize(int minimum, int preferred, int maximum) -> {
                out.writeShort(InfoType.BLOCK_SIZE);
                out.writeInt(minimum);
                out.writeInt(preferred);
                out.writeInt(maximum);
            }
            case OptionReply.InfoUnknown u -> throw new IllegalArgumentException("cannot encode an unknown info item");
            case OptionReply.MetaContext(int id, String name) -> {
                out.writeInt(id);
                out.writeCharSequence(name, StandardCharsets.UTF_8);
            }
            case OptionReply.Error(int type, String message) -> out.writeCharSequence(message, StandardCharsets.UTF_8);
        }
        out.setInt(lengthIndex, out.writerIndex() - start);
    }

    /**
     * Decodes the payload of a reply whose header announced {@code type}; {@code data} holds
     * exactly the payload.
     *
     * @throws IllegalArgumentException when the payload does not fit the type
     */
    public static OptionReply decode(int type, ByteBuf data) {
        return switch (type) {
            case OptionReplyType.ACK -> new OptionReply.Ack();
            case OptionReplyType.SERVER -> {
                int nameLength = checkedLength(data.readInt(), data.readableBytes(), "export name");
                String name = data.readCharSequence(nameLength, StandardCharsets.UTF_8).toString();
                yield new OptionReply.Server(name, rest(data));
            }
            case OptionReplyType.INFO -> decodeInfo(data);
            case OptionReplyType.META_CONTEXT -> new OptionReply.MetaContext(data.readInt(), rest(data));
            default -> {
                if (!OptionReplyType.isError(type)) {
                    throw new IllegalArgumentException("unknown option reply type " + type);
                }
                yield new OptionReply.Error(type, rest(data));
            }
        };
    }

    private static OptionReply decodeInfo(ByteBuf data) {
        int infoType = data.readUnsignedShort();
        return switch (infoType) {
            case InfoType.EXPORT -> new OptionReply.InfoExport(data.readLong(), data.readUnsignedShort());
            case InfoType.NAME -> new OptionReply.InfoName(rest(data));
            case InfoType.DESCRIPTION -> new OptionReply.InfoDescription(rest(data));
            case InfoType.BLOCK_SIZE -> new OptionReply.InfoBlockSize(data.readInt(), data.readInt(), data.readInt());
            default -> new OptionReply.InfoUnknown(infoType);
        };
    }

    private static int checkedLength(int length, int available, String what) {
        if (length < 0 || length > available) {
            throw new IllegalArgumentException(what + " length " + Integer.toUnsignedString(length)
                    + " exceeds the reply length");
        }
        return length;
    }

    private static String rest(ByteBuf data) {
        return data.readCharSequence(data.readableBytes(), StandardCharsets.UTF_8).toString();
    }
}
