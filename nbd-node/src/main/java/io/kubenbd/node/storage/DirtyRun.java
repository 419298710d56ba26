package io.kubenbd.node.storage;

/**
 * Consecutive bytes with one dirty state, as reported for {@code qemu:dirty-bitmap:NAME}
 * (NBD block status flag bit 0 set when {@code dirty}).
 *
 * @param length bytes in the run, always positive
 * @param dirty  written since the bitmap was created or last cleared
 */
public record DirtyRun(long length, boolean dirty) {
    public DirtyRun {
        if (length <= 0) {
            throw new IllegalArgumentException("run length must be positive: " + length);
        }
    }
}
