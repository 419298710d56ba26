package io.kubenbd.node.csi;

import java.net.ProtocolException;
import java.util.List;
import java.util.Optional;

/**
 * A received generic netlink message: the family it came from, {@code struct genlmsghdr} and
 * the attributes after it. Replies to requests (a family's answer, before the ACK) arrive in
 * this shape; it is what request-specific decoders such as
 * {@link NbdNetlinkRequest.Connect#deviceIndexFrom} read.
 *
 * @param familyId   {@code nlmsg_type}, the family's id that {@code CTRL_CMD_GETFAMILY} resolved
 * @param command    {@code genlmsghdr.cmd}
 * @param version    {@code genlmsghdr.version}, the family's interface version
 * @param attributes the top-level attributes, in the order sent
 */
record GenericNetlinkMessage(int familyId, int command, int version, List<NetlinkAttribute> attributes) {
    /** {@code sizeof(struct genlmsghdr)}: cmd, version and two reserved bytes. */
    static final int HEADER_LENGTH = 4;

    GenericNetlinkMessage {
        attributes = List.copyOf(attributes);
    }

    /**
     * Reads a message of a generic netlink family. The families used here declare no
     * family-specific header ({@code hdrsize} 0), so the attributes start right after
     * {@code genlmsghdr}.
     */
    static GenericNetlinkMessage parse(NetlinkMessage message) throws ProtocolException {
        if (message.type() < NetlinkMessage.NLMSG_MIN_TYPE || message.payload().remaining() < HEADER_LENGTH) {
            throw new ProtocolException("netlink message type " + message.type() + " with "
                    + message.payload().remaining() + " payload bytes is not a generic netlink message");
        }
        return new GenericNetlinkMessage(
                message.type(),
                Byte.toUnsignedInt(message.payload().get(0)),
                Byte.toUnsignedInt(message.payload().get(1)),
                NetlinkAttribute.parseAll(message.payload().slice(HEADER_LENGTH, message.payload().remaining() - HEADER_LENGTH)));
    }

    Optional<NetlinkAttribute> attribute(int type) {
        return NetlinkAttribute.find(attributes, type);
    }
}
