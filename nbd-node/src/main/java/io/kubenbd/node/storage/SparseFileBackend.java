package io.kubenbd.node.storage;

import static io.kubenbd.node.storage.LinuxSyscalls.FALLOC_FL_KEEP_SIZE;
import static io.kubenbd.node.storage.LinuxSyscalls.FALLOC_FL_PUNCH_HOLE;
import static io.kubenbd.node.storage.LinuxSyscalls.FALLOC_FL_ZERO_RANGE;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * A regular file, usually sparse. Trim punches holes, zeroing prefers fallocate modes over
 * writing, and allocation comes from SEEK_HOLE/SEEK_DATA. What the file system turns out not
 * to support is remembered, so an unsupported call is made once per backend, not per request.
 */
final class SparseFileBackend implements StorageBackend {
    private static final int PREFERRED_BLOCK_SIZE = 4096;

    private final NativeFile file;
    private final long size;
    // Written once when the file system first answers EOPNOTSUPP/EINVAL; racing threads at worst ask again.
    /** fallocate modes the file system answered EOPNOTSUPP to; racing threads at worst ask twice. */
    private final Set<FallocateMode> unsupported = ConcurrentHashMap.newKeySet();
    private volatile boolean seekDataSupported = true;
    private final DataRunCache knownData = new DataRunCache();

    private SparseFileBackend(NativeFile file, long size) {
        this.file = file;
        this.size = size;
    }

    static SparseFileBackend open(NativeFile file, long size) throws ErrnoException {
        SparseFileBackend backend = new SparseFileBackend(file, size);
        if (!file.readOnly()) {
            // Punching at the end of the file with KEEP_SIZE changes nothing but tells whether holes can be
            // punched. Only EOPNOTSUPP is a verdict; any other error is left for a real trim to report.
            try {
                backend.fallocate(FallocateMode.PUNCH_HOLE, size, 1);
            } catch (ErrnoException inconclusive) {
                // supportsTrim stays true
            }
        }
        return backend;
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean readOnly() {
        return file.readOnly();
    }

    @Override
    public boolean rotational() {
        return false;
    }

    @Override
    public int minimumBlockSize() {
        return 1;
    }

    @Override
    public int preferredBlockSize() {
        return PREFERRED_BLOCK_SIZE;
    }

    /** False when read-only or when the file system cannot punch holes (ramfs, for one). */
    @Override
    public boolean supportsTrim() {
        return !file.readOnly() && !unsupported.contains(FallocateMode.PUNCH_HOLE);
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws ErrnoException {
        file.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws ErrnoException {
        file.write(offset, src);
    }

    @Override
    public void flush() throws ErrnoException {
        file.fdatasync();
    }

    /** Punches a hole; on a file system without hole punching this does nothing, as TRIM is advisory. */
    @Override
    public void trim(long offset, long length) throws ErrnoException {
        requireWritable("fallocate");
        fallocate(FallocateMode.PUNCH_HOLE, offset, length);
    }

    @Override
    public boolean writeZeroes(long offset, long length, boolean mayPunchHole, boolean fastOnly)
            throws ErrnoException {
        requireWritable("fallocate");
        if (mayPunchHole && fallocate(FallocateMode.PUNCH_HOLE, offset, length)) {
            return true;
        }
        if (fallocate(FallocateMode.ZERO_RANGE, offset, length)) {
            return true;
        }
        if (!unsupported.contains(FallocateMode.PUNCH_HOLE) && !unsupported.contains(FallocateMode.ALLOCATE)) {
            // tmpfs has no ZERO_RANGE: a punched hole reads as zeroes, re-allocating keeps it from being a hole.
            if (fallocate(FallocateMode.PUNCH_HOLE, offset, length)) {
                if (fallocate(FallocateMode.ALLOCATE, offset, length)) {
                    return true;
                }
                // The range already reads as zeroes but is a hole; only writing can allocate it now.
                file.writeZeroes(offset, length);
                return true;
            }
        }
        if (fastOnly) {
            return false;
        }
        file.writeZeroes(offset, length);
        return true;
    }

    @Override
    public void cache(long offset, long length) throws ErrnoException {
        file.adviseWillNeed(offset, length);
    }

    /**
     * Ranges that are allocated but never written (ext4 unwritten extents left by ZERO_RANGE,
     * tmpfs pages left by fallocate) come back from SEEK_HOLE as holes. They read as zeroes,
     * so the hole+zero answer is right about contents, just not about the space they hold.
     */
    @Override
    public List<Extent> allocation(long offset, long length, int maxExtents) throws ErrnoException {
        long end = Math.min(offset + length, size);
        List<Extent> extents = new ArrayList<>();
        long position = offset;
        while (position < end && extents.size() < maxExtents) {
            Extent extent = extentAt(position, end);
            extents.add(extent);
            position += extent.length();
        }
        return extents;
    }

    @Override
    public void close() throws ErrnoException {
        file.close();
    }

    /** The extent starting at {@code position}, cut at {@code end}. */
    private Extent extentAt(long position, long end) throws ErrnoException {
        if (!seekDataSupported) {
            return Extent.data(end - position);
        }
        long cachedEnd = knownData.dataEndAt(position);
        if (cachedEnd > 0) {
            return Extent.data(Math.min(cachedEnd, end) - position);
        }
        long token = knownData.generation();
        long hole;
        try {
            // Asking for the next hole first answers the common all-data case with one call.
            hole = file.seek(position, LinuxSyscalls.SEEK_HOLE);
        } catch (ErrnoException e) {
            switch (e.errno()) {
                case Errno.EINVAL, Errno.EOPNOTSUPP -> {
                    seekDataSupported = false;
                    return Extent.data(end - position);
                }
                // The file shrank below position; reads there return zeroes.
                case Errno.ENXIO -> {
                    return Extent.sparseHole(end - position);
                }
                default -> throw e;
            }
        }
        if (hole > position) {
            knownData.remember(token, position, hole);
            return Extent.data(Math.min(hole, end) - position);
        }
        long data;
        try {
            data = file.seek(position, LinuxSyscalls.SEEK_DATA);
        } catch (ErrnoException e) {
            if (e.errno() != Errno.ENXIO) {
                throw e;
            }
            data = end;
        }
        return Extent.sparseHole(Math.min(data, end) - position);
    }

    /** The fallocate calls this backend makes, each of which a file system may not support. */
    private enum FallocateMode {
        PUNCH_HOLE(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE),
        ZERO_RANGE(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE),
        ALLOCATE(0);

        final int flags;

        FallocateMode(int flags) {
            this.flags = flags;
        }
    }

    /**
     * Returns false, having changed nothing, if the file system does not support {@code mode}.
     * Every mode can turn data into holes as SEEK_HOLE sees them, so each success drops the
     * cached data run.
     */
    private boolean fallocate(FallocateMode mode, long offset, long length) throws ErrnoException {
        if (unsupported.contains(mode)) {
            return false;
        }
        try {
            file.fallocate(mode.flags, offset, length);
            knownData.invalidate();
            return true;
        } catch (ErrnoException e) {
            if (e.errno() != Errno.EOPNOTSUPP) {
                throw e;
            }
            unsupported.add(mode);
            return false;
        }
    }

    private void requireWritable(String call) throws ErrnoException {
        if (file.readOnly()) {
            throw new ErrnoException(call, file.path(), Errno.EROFS);
        }
    }
}
