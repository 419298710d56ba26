package io.kubenbd.node.storage;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;

/**
 * The bytes behind one export. Every connection to an export shares one backend, so every
 * method must be safe to call from many threads at once (positional I/O, no shared cursor).
 * Methods block; callers keep them off event-loop threads.
 *
 * <p>Offsets and lengths are checked by the caller against {@link #size()}; a backend may
 * assume {@code 0 <= offset && offset + length <= size()}.
 *
 * <p>A failed system call surfaces as an {@link ErrnoException} whose {@code errno()} is the
 * kernel's number, for mapping onto NBD errors; changing a read-only backend fails with EROFS.
 */
public interface StorageBackend extends AutoCloseable {

    /** Opens a regular (possibly sparse) file or a block device, whichever {@code path} is. */
    static StorageBackend open(Path path, boolean readOnly) throws IOException {
        return StorageBackends.open(path, readOnly);
    }

    /** Size of the export in bytes. */
    long size();

    boolean readOnly();

    /** True when the medium is known to be rotational (block devices report it in sysfs). */
    boolean rotational();

    /** Smallest addressable unit: 1 for files, the logical sector size for block devices. */
    int minimumBlockSize();

    /** Size at which aligned I/O avoids read-modify-write (a power of two, at least 512). */
    int preferredBlockSize();

    /** Whether {@link #trim} can release space (punch hole, BLKDISCARD). */
    boolean supportsTrim();

    /**
     * Fills {@code dst} from its position to its limit with the bytes at {@code offset};
     * its position ends at its limit. Direct buffers are read into without copying.
     */
    void read(long offset, ByteBuffer dst) throws IOException;

    /**
     * Writes {@code src} from its position to its limit at {@code offset}; its position ends
     * at its limit. Direct buffers are written from without copying.
     */
    void write(long offset, ByteBuffer src) throws IOException;

    /** Makes every completed write durable (fdatasync). */
    void flush() throws IOException;

    /** Releases the range if the backend can; the range's contents are undefined afterwards. */
    void trim(long offset, long length) throws IOException;

    /**
     * Makes the range read as zeroes.
     *
     * @param mayPunchHole the range may be deallocated (false for NBD_CMD_FLAG_NO_HOLE)
     * @param fastOnly     succeed only if this is cheaper than writing zeroes (NBD_CMD_FLAG_FAST_ZERO)
     * @return false, with nothing changed, when {@code fastOnly} is set and zeroing cannot be fast
     */
    boolean writeZeroes(long offset, long length, boolean mayPunchHole, boolean fastOnly) throws IOException;

    /** Hints that the range will be read soon (readahead); never changes contents. */
    void cache(long offset, long length) throws IOException;

    /**
     * Describes the allocation of {@code [offset, offset + length)} as consecutive extents,
     * first one starting at {@code offset}. Returns at least one and at most {@code maxExtents}
     * extents; they may end before {@code offset + length} (the caller asks again) and
     * must not extend past {@link #size()}.
     */
    List<Extent> allocation(long offset, long length, int maxExtents) throws IOException;

    @Override
    void close() throws IOException;
}
