package io.kubenbd.node.server;

import io.kubenbd.node.protocol.BlockDescriptor;

import java.io.IOException;
import java.util.List;

/** One metadata context an export offers for NBD_CMD_BLOCK_STATUS. */
public interface MetaContextProvider {

    /** The full context name, e.g. {@code base:allocation}. */
    String name();

    /**
     * Descriptors for {@code [offset, offset + length)}, starting at {@code offset}, at least one
     * and at most {@code maxDescriptors}, never past the export's end.
     */
    List<BlockDescriptor> describe(long offset, long length, int maxDescriptors) throws IOException;
}
