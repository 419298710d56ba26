package io.kubenbd.node.storage;

/**
 * A new dirty bitmap would exceed what one export may hold ({@link DirtyBitmapSet#MAX_BITMAPS}
 * bitmaps, {@link DirtyBitmapSet#MAX_BITMAP_BYTES} of bits). An IllegalArgumentException, so a
 * configuration asking for too much is refused as any bad option; the control API answers it
 * with RESOURCE_EXHAUSTED rather than INVALID_ARGUMENT.
 */
public final class DirtyBitmapLimitException extends IllegalArgumentException {
    public DirtyBitmapLimitException(String message) {
        super(message);
    }
}
