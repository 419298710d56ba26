package io.kubenbd.node.csi;

import java.net.ProtocolException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Optional;

/**
 * {@code CTRL_CMD_GETFAMILY} to the generic netlink controller ("nlctrl"): generic netlink
 * families get their message type (id) when they register, so the nbd driver's id differs from
 * boot to boot and must be looked up by name before any request to it.
 *
 * @param familyName the name the family registered, e.g. {@code "nbd"}
 */
record GenericNetlinkFamilyRequest(String familyName) {
    /** The controller's own, fixed id ({@code GENL_ID_CTRL}). */
    static final int CONTROLLER_FAMILY_ID = 16;
    /** The command of the controller's answer, which describes the family. */
    static final int CTRL_CMD_NEWFAMILY = 1;
    static final int CTRL_CMD_GETFAMILY = 3;
    static final int CTRL_ATTR_FAMILY_ID = 1;
    static final int CTRL_ATTR_FAMILY_NAME = 2;
    /** The controller interface version libnl's {@code genl_ctrl_resolve} sends; the kernel accepts any. */
    private static final int CONTROLLER_VERSION = 1;
    /** {@code GENL_NAMSIZ}: names are at most 15 bytes plus the NUL. */
    private static final int MAX_NAME_BYTES = 15;

    GenericNetlinkFamilyRequest {
        if (familyName.isEmpty() || familyName.getBytes(StandardCharsets.UTF_8).length > MAX_NAME_BYTES) {
            throw new IllegalArgumentException("generic netlink family name '" + familyName + "' must be 1 to "
                    + MAX_NAME_BYTES + " bytes");
        }
    }

    byte[] encode(int sequence, int portId) {
        return new GenericNetlinkMessageBuilder(CONTROLLER_FAMILY_ID,
                NetlinkMessage.NLM_F_REQUEST | NetlinkMessage.NLM_F_ACK, sequence, portId,
                CTRL_CMD_GETFAMILY, CONTROLLER_VERSION)
                .putString(CTRL_ATTR_FAMILY_NAME, familyName)
                .build();
    }

    /** The family id from the controller's reply ({@code CTRL_ATTR_FAMILY_ID}, a u16). */
    int familyIdFrom(List<GenericNetlinkMessage> replies) throws ProtocolException {
        for (GenericNetlinkMessage reply : replies) {
            if (reply.familyId() == CONTROLLER_FAMILY_ID && reply.command() == CTRL_CMD_NEWFAMILY) {
                Optional<NetlinkAttribute> id = reply.attribute(CTRL_ATTR_FAMILY_ID);
                if (id.isPresent()) {
                    return id.get().u16();
                }
            }
        }
        throw new ProtocolException("no CTRL_ATTR_FAMILY_ID for generic netlink family '" + familyName
                + "' in the controller's reply");
    }
}
