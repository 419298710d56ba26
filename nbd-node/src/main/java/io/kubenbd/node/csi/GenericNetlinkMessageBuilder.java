package io.kubenbd.node.csi;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Writes one generic netlink request: {@code nlmsghdr}, {@code genlmsghdr}, then attributes,
 * each padded to 4 bytes, in host byte order as the kernel reads them. A nest's length is
 * only known once its contents are written, so {@link #startNested} leaves room for the header
 * and {@link #endNested} fills it in, as libnl's {@code nla_nest_start}/{@code nla_nest_end} do;
 * {@link #build} does the same for {@code nlmsg_len}. Not thread-safe; one builder per message.
 */
final class GenericNetlinkMessageBuilder {
    /** {@code nla_len} is a u16, so no attribute, nests included, can be larger. */
    private static final int MAX_ATTRIBUTE_LENGTH = 0xffff;

    private ByteBuffer buffer = ByteBuffer.allocate(256).order(ByteOrder.nativeOrder());

    /**
     * @param familyId the generic netlink family's id ({@code nlmsg_type})
     * @param flags    {@code nlmsg_flags}, typically {@code NLM_F_REQUEST | NLM_F_ACK}
     * @param sequence {@code nlmsg_seq}, echoed in the replies
     * @param portId   {@code nlmsg_pid}, the sending socket's port
     * @param command  {@code genlmsghdr.cmd}
     * @param version  {@code genlmsghdr.version}, the family's interface version
     */
    GenericNetlinkMessageBuilder(int familyId, int flags, int sequence, int portId, int command, int version) {
        requireUnsigned(familyId, 0xffff, "family id");
        requireUnsigned(flags, 0xffff, "flags");
        requireUnsigned(command, 0xff, "command");
        requireUnsigned(version, 0xff, "version");
        buffer.putInt(0) // nlmsg_len, set by build()
                .putShort((short) familyId)
                .putShort((short) flags)
                .putInt(sequence)
                .putInt(portId)
                .put((byte) command)
                .put((byte) version)
                .putShort((short) 0);
    }

    GenericNetlinkMessageBuilder putU32(int type, int value) {
        beginAttribute(type, Integer.BYTES);
        buffer.putInt(value);
        return pad();
    }

    GenericNetlinkMessageBuilder putU64(int type, long value) {
        beginAttribute(type, Long.BYTES);
        buffer.putLong(value);
        return pad();
    }

    /** A NUL-terminated string, the form both {@code NLA_NUL_STRING} and {@code NLA_STRING} policies accept. */
    GenericNetlinkMessageBuilder putString(int type, String value) {
        if (value.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("netlink string attribute " + type + " contains a NUL character");
        }
        byte[] bytes = value.getBytes(StandardCharsets.UTF_8);
        beginAttribute(type, bytes.length + 1);
        buffer.put(bytes).put((byte) 0);
        return pad();
    }

    /**
     * Opens a nest of {@code type}, flagged {@link NetlinkAttribute#NLA_F_NESTED} as strict kernel
     * validation requires; returns its start for {@link #endNested}.
     */
    int startNested(int type) {
        return beginAttribute(type | NetlinkAttribute.NLA_F_NESTED, 0);
    }

    /**
     * Closes the nest opened at {@code start}: its length covers everything written since,
     * padding included, as the kernel's {@code nla_nest_end} counts it.
     */
    GenericNetlinkMessageBuilder endNested(int start) {
        int length = buffer.position() - start;
        if (length > MAX_ATTRIBUTE_LENGTH) {
            throw new IllegalArgumentException("nested netlink attribute of " + length + " bytes exceeds nla_len's 65535");
        }
        buffer.putShort(start, (short) length);
        return this;
    }

    /** The finished message, {@code nlmsg_len} filled in. */
    byte[] build() {
        buffer.putInt(0, buffer.position());
        return Arrays.copyOf(buffer.array(), buffer.position());
    }

    /** Writes an attribute header whose {@code nla_len} counts {@code payloadLength}; returns where it starts. */
    private int beginAttribute(int type, int payloadLength) {
        int length = NetlinkAttribute.HEADER_LENGTH + payloadLength;
        if (length > MAX_ATTRIBUTE_LENGTH) {
            throw new IllegalArgumentException("netlink attribute of " + length + " bytes exceeds nla_len's 65535");
        }
        requireUnsigned(type & ~NetlinkAttribute.NLA_F_NESTED, NetlinkAttribute.NLA_F_NET_BYTEORDER - 1, "attribute type");
        ensureCapacity(NetlinkAttribute.align(length));
        int start = buffer.position();
        buffer.putShort((short) length).putShort((short) type);
        return start;
    }

    /**
     * Zero-fills up to the next 4-byte boundary, which {@code nla_len} does not count. The headers
     * before the first attribute are 20 bytes, so absolute and attribute-relative alignment agree.
     */
    private GenericNetlinkMessageBuilder pad() {
        while (buffer.position() % NetlinkAttribute.ALIGNMENT != 0) {
            buffer.put((byte) 0);
        }
        return this;
    }

    private void ensureCapacity(int more) {
        if (buffer.remaining() < more) {
            ByteBuffer larger = ByteBuffer.allocate(Math.max(buffer.capacity() * 2, buffer.position() + more))
                    .order(ByteOrder.nativeOrder());
            buffer.flip();
            larger.put(buffer);
            buffer = larger;
        }
    }

    private static void requireUnsigned(int value, int max, String what) {
        if (value < 0 || value > max) {
            throw new IllegalArgumentException("netlink " + what + " " + value + " is outside 0.." + max);
        }
    }
}
