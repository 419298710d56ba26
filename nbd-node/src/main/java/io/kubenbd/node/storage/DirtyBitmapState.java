package io.kubenbd.node.storage;

/** What a dirty bitmap is doing; see {@link DirtyBitmapSet}. */
public enum DirtyBitmapState {
    /** Every write, trim and write-zeroes marks the granules it covers. */
    RECORDING,
    /** Stopped recording (by a checkpoint); its contents change only through clear or merge. */
    FROZEN,
    /**
     * Its contents cannot be trusted (the server did not shut down cleanly, the file is
     * corrupt, or the export size changed); it is not offered until cleared or removed.
     */
    INCONSISTENT
}
