package io.kubenbd.node.storage;

/**
 * A run of bytes with one allocation state.
 *
 * @param length bytes in the run, always positive
 * @param hole   not allocated in the backing store
 * @param zero   known to read as zeroes (every hole of a sparse file does)
 */
public record Extent(long length, boolean hole, boolean zero) {
    public Extent {
        if (length <= 0) {
            throw new IllegalArgumentException("extent length must be positive: " + length);
        }
    }

    public static Extent data(long length) {
        return new Extent(length, false, false);
    }

    public static Extent sparseHole(long length) {
        return new Extent(length, true, true);
    }
}
