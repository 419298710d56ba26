package io.kubenbd.node.protocol;

import io.netty.buffer.ByteBuf;

import java.util.List;

/**
 * One piece of a reply, independent of the reply style negotiated; {@link ReplyEncoder}
 * turns it into a simple, structured or extended message.
 */
public sealed interface ReplyChunk {

    /** Bytes of the export starting at {@code offset}; the encoder releases {@code data}. */
    record OffsetData(long offset, ByteBuf data) implements ReplyChunk {}

    /** {@code length} bytes at {@code offset} that read as zeroes. */
    record OffsetHole(long offset, int length) implements ReplyChunk {}

    /** Extents for one metadata context. */
    record BlockStatus(int contextId, List<BlockDescriptor> descriptors) implements ReplyChunk {
        public BlockStatus {
            if (descriptors.isEmpty()) {
                throw new IllegalArgumentException("a block status chunk needs at least one descriptor");
            }
            descriptors = List.copyOf(descriptors);
        }
    }

    /** A failure of the whole request, with a message for a human. */
    record Error(NbdError error, String message) implements ReplyChunk {}
}
