package io.kubenbd.node.protocol;

/** One extent of a block status reply: a length and the context's status bits for it. */
public record BlockDescriptor(long length, long status) {
    public BlockDescriptor {
        if (length <= 0) {
            throw new IllegalArgumentException("descriptor length must be positive: " + length);
        }
    }
}
