package io.kubenbd.node.csi;

import java.net.ProtocolException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;

/**
 * One netlink message as the kernel sent it: the fields of {@code struct nlmsghdr} and the
 * payload after it. A single datagram can carry several messages (a reply and the ACK that
 * follows it), so {@link #parseAll} splits a whole datagram. Netlink talks in host byte order,
 * which is why every buffer here is {@link ByteOrder#nativeOrder()}.
 *
 * @param type     {@code nlmsg_type}: a generic netlink family id, or {@link #NLMSG_ERROR} and friends
 * @param flags    {@code nlmsg_flags}
 * @param sequence {@code nlmsg_seq}, echoed from the request so replies can be matched to it
 * @param portId   {@code nlmsg_pid}, the receiving socket's port for kernel replies
 * @param payload  read-only, host byte order, from position 0 to the end of this message
 *                 (without the padding that aligns the next one)
 */
record NetlinkMessage(int type, int flags, int sequence, int portId, ByteBuffer payload) {
    /** {@code sizeof(struct nlmsghdr)}. */
    static final int HEADER_LENGTH = 16;
    /** Messages in a datagram start on 4-byte boundaries ({@code NLMSG_ALIGNTO}). */
    static final int ALIGNMENT = 4;

    static final int NLMSG_NOOP = 1;
    /** An error or, with error 0, the acknowledgement that {@link #NLM_F_ACK} asked for. */
    static final int NLMSG_ERROR = 2;
    static final int NLMSG_DONE = 3;
    /** Types below this are netlink's own control messages; families (generic netlink's ids) start here. */
    static final int NLMSG_MIN_TYPE = 0x10;

    static final int NLM_F_REQUEST = 0x1;
    static final int NLM_F_ACK = 0x4;

    NetlinkMessage {
        payload = payload.slice().asReadOnlyBuffer().order(ByteOrder.nativeOrder());
    }

    /** Splits a received datagram into its messages, checking every length against what arrived. */
    static List<NetlinkMessage> parseAll(ByteBuffer datagram) throws ProtocolException {
        ByteBuffer in = datagram.slice().order(ByteOrder.nativeOrder());
        List<NetlinkMessage> messages = new ArrayList<>();
        int offset = 0;
        while (in.limit() - offset >= HEADER_LENGTH) {
            int length = in.getInt(offset);
            if (length < HEADER_LENGTH || length > in.limit() - offset) {
                throw new ProtocolException("netlink message at offset " + offset + " claims " + Integer.toUnsignedString(length)
                        + " bytes; " + (in.limit() - offset) + " remain in the datagram");
            }
            messages.add(new NetlinkMessage(
                    Short.toUnsignedInt(in.getShort(offset + 4)),
                    Short.toUnsignedInt(in.getShort(offset + 6)),
                    in.getInt(offset + 8),
                    in.getInt(offset + 12),
                    in.slice(offset + HEADER_LENGTH, length - HEADER_LENGTH)));
            offset += Math.min(align(length), in.limit() - offset);
        }
        if (offset != in.limit()) {
            throw new ProtocolException((in.limit() - offset) + " trailing bytes after the last netlink message");
        }
        return List.copyOf(messages);
    }

    /** {@code NLMSG_ALIGN}: the length rounded up to the next message boundary. */
    static int align(int length) {
        return (length + ALIGNMENT - 1) & -ALIGNMENT;
    }

    boolean isError() {
        return type == NLMSG_ERROR;
    }

    /**
     * The error an {@link #NLMSG_ERROR} message reports, as a positive errno; 0 is an ACK. The
     * kernel stores it negated ({@code -EBUSY}) in {@code struct nlmsgerr}, ahead of the header
     * of the request it answers.
     */
    int errno() throws ProtocolException {
        if (!isError()) {
            throw new IllegalStateException("netlink message type " + type + " is not NLMSG_ERROR");
        }
        if (payload.remaining() < Integer.BYTES) {
            throw new ProtocolException("NLMSG_ERROR with " + payload.remaining() + " payload bytes has no error code");
        }
        return -payload.getInt(0);
    }
}
