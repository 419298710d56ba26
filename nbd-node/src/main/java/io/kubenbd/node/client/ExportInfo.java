package io.kubenbd.node.client;

import io.kubenbd.node.protocol.TransmissionFlags;

/**
 * What NBD_OPT_INFO or NBD_OPT_GO said about an export. Block sizes are 0 when the server
 * sent no NBD_INFO_BLOCK_SIZE.
 */
public record ExportInfo(String name, String description, long size, int flags,
                         int minimumBlock, int preferredBlock, int maximumBlock) {
    public boolean hasFlag(int flag) {
        return (flags & flag) != 0;
    }

    public boolean readOnly() {
        return hasFlag(TransmissionFlags.READ_ONLY);
    }
}
