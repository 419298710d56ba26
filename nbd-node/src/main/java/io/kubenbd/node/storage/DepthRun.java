package io.kubenbd.node.storage;

/**
 * A run of bytes provided by one layer of a backing chain, as qemu:allocation-depth reports it.
 *
 * @param length bytes in the run, always positive
 * @param depth  0 when no layer holds the bytes, 1 for the top layer, 2 for the first backing layer, ...
 */
public record DepthRun(long length, int depth) {
    public DepthRun {
        if (length <= 0) {
            throw new IllegalArgumentException("run length must be positive: " + length);
        }
        if (depth < 0) {
            throw new IllegalArgumentException("depth must not be negative: " + depth);
        }
    }
}
