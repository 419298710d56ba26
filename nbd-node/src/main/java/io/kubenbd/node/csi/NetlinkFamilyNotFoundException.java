package io.kubenbd.node.csi;

import io.kubenbd.node.storage.ErrnoException;
import java.io.IOException;

/**
 * The generic netlink controller does not know the family (ENOENT). For "nbd" this is how a
 * node without the kernel's nbd driver shows itself (the kernel has already tried to load the
 * module by its family alias), so the caller can fall back to the userspace attach path
 * instead of failing the volume. The same answer comes from a kernel whose nbd family is not
 * network-namespace aware when the socket is outside the host's network namespace.
 */
final class NetlinkFamilyNotFoundException extends IOException {
    private static final long serialVersionUID = 1L;

    private final String familyName;

    NetlinkFamilyNotFoundException(String familyName, ErrnoException cause) {
        super("generic netlink family '" + familyName + "' not found (is the " + familyName
                + " kernel module loaded?)", cause);
        this.familyName = familyName;
    }

    String familyName() {
        return familyName;
    }
}
