package io.kubenbd.node.server;

import io.kubenbd.node.protocol.BlockDescriptor;
import io.kubenbd.node.storage.DirtyBitmapSet;

import java.io.IOException;
import java.util.List;

/** {@code qemu:dirty-bitmap:NAME}: bit 0 set where the bitmap says the data changed. */
final class DirtyBitmapContext implements MetaContextProvider {
    static final String PREFIX = "qemu:dirty-bitmap:";
    static final int STATE_DIRTY = 1;

    private final DirtyBitmapSet bitmaps;
    private final String bitmap;

    DirtyBitmapContext(DirtyBitmapSet bitmaps, String bitmap) {
        this.bitmaps = bitmaps;
        this.bitmap = bitmap;
    }

    @Override
    public String name() {
        return PREFIX + bitmap;
    }

    @Override
    public List<BlockDescriptor> describe(long offset, long length, int maxDescriptors) throws IOException {
        try {
            return bitmaps.runs(bitmap, offset, length, maxDescriptors).stream()
                    .map(run -> new BlockDescriptor(run.length(), run.dirty() ? STATE_DIRTY : 0))
                    .toList();
        } catch (IllegalStateException | IllegalArgumentException e) {
            // Removed or made inconsistent since the client selected it: an error, never a stale answer.
            throw new IOException("bitmap '" + bitmap + "': " + e.getMessage(), e);
        }
    }
}
