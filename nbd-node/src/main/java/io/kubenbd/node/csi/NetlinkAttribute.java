package io.kubenbd.node.csi;

import java.net.ProtocolException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * One received netlink attribute ({@code struct nlattr} and its payload). The typed getters
 * check the payload is long enough, because a short attribute means the kernel and this code
 * disagree about the layout and reading on would return garbage.
 *
 * @param type    {@code nla_type} without {@link #NLA_F_NESTED} and {@link #NLA_F_NET_BYTEORDER}:
 *                kernels build nests both with the flag ({@code nla_nest_start}) and without it
 *                ({@code nla_nest_start_noflag}, which the nbd driver uses), so the flag says nothing
 * @param payload read-only, host byte order, exactly {@code nla_len - 4} bytes
 */
record NetlinkAttribute(int type, ByteBuffer payload) {
    /** {@code sizeof(struct nlattr)}. */
    static final int HEADER_LENGTH = 4;
    /** {@code NLA_ALIGNTO}: every attribute starts on a 4-byte boundary. */
    static final int ALIGNMENT = 4;
    static final int NLA_F_NESTED = 1 << 15;
    static final int NLA_F_NET_BYTEORDER = 1 << 14;
    private static final int TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

    NetlinkAttribute {
        payload = payload.slice().asReadOnlyBuffer().order(ByteOrder.nativeOrder());
    }

    /** Splits a run of attributes, e.g. what follows the generic netlink header, or a nest's payload. */
    static List<NetlinkAttribute> parseAll(ByteBuffer attributes) throws ProtocolException {
        ByteBuffer in = attributes.slice().order(ByteOrder.nativeOrder());
        List<NetlinkAttribute> parsed = new ArrayList<>();
        int offset = 0;
        while (in.limit() - offset >= HEADER_LENGTH) {
            int length = Short.toUnsignedInt(in.getShort(offset));
            if (length < HEADER_LENGTH || length > in.limit() - offset) {
                throw new ProtocolException("netlink attribute at offset " + offset + " claims " + length
                        + " bytes; " + (in.limit() - offset) + " remain");
            }
            int type = Short.toUnsignedInt(in.getShort(offset + 2)) & TYPE_MASK;
            parsed.add(new NetlinkAttribute(type, in.slice(offset + HEADER_LENGTH, length - HEADER_LENGTH)));
            offset += Math.min(align(length), in.limit() - offset);
        }
        if (offset != in.limit()) {
            throw new ProtocolException((in.limit() - offset) + " trailing bytes after the last netlink attribute");
        }
        return List.copyOf(parsed);
    }

    /** The first attribute of {@code type}; the kernel never repeats the ones this code reads. */
    static Optional<NetlinkAttribute> find(List<NetlinkAttribute> attributes, int type) {
        return attributes.stream().filter(attribute -> attribute.type() == type).findFirst();
    }

    /** {@code NLA_ALIGN}: the length rounded up to the next attribute boundary. */
    static int align(int length) {
        return (length + ALIGNMENT - 1) & -ALIGNMENT;
    }

    int u8() throws ProtocolException {
        requireLength(Byte.BYTES, "u8");
        return Byte.toUnsignedInt(payload.get(0));
    }

    int u16() throws ProtocolException {
        requireLength(Short.BYTES, "u16");
        return Short.toUnsignedInt(payload.getShort(0));
    }

    /** As a Java int: callers that need the unsigned value use {@link Integer#toUnsignedLong}. */
    int u32() throws ProtocolException {
        requireLength(Integer.BYTES, "u32");
        return payload.getInt(0);
    }

    long u64() throws ProtocolException {
        requireLength(Long.BYTES, "u64");
        return payload.getLong(0);
    }

    /** A string attribute, up to its NUL terminator if it has one ({@code NLA_NUL_STRING} or {@code NLA_STRING}). */
    String string() {
        int end = 0;
        while (end < payload.limit() && payload.get(end) != 0) {
            end++;
        }
        byte[] bytes = new byte[end];
        payload.get(0, bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    /** The attributes nested in this one. */
    List<NetlinkAttribute> nested() throws ProtocolException {
        return parseAll(payload);
    }

    private void requireLength(int needed, String kind) throws ProtocolException {
        if (payload.limit() < needed) {
            throw new ProtocolException("netlink attribute " + type + " has " + payload.limit()
                    + " bytes, too short for a " + kind);
        }
    }
}
