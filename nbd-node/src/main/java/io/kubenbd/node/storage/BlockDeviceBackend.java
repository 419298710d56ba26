package io.kubenbd.node.storage;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.List;

/**
 * A block device. Geometry comes from ioctls, capabilities from the request queue in sysfs;
 * trim is BLKDISCARD and zeroing BLKZEROOUT, which the kernel offloads when the device can.
 */
final class BlockDeviceBackend implements StorageBackend {
    private static final long BLKSSZGET = 0x1268;
    private static final long BLKDISCARD = 0x1277;
    private static final long BLKPBSZGET = 0x127b;
    private static final long BLKZEROOUT = 0x127f;
    private static final long BLKGETSIZE64 = 0x80081272L;
    private static final int MIN_PREFERRED_BLOCK_SIZE = 4096;

    private final NativeFile device;
    private final long size;
    private final int logicalSectorSize;
    private final int preferredBlockSize;
    private final BlockDeviceQueue queue;
    // Set when BLKDISCARD answers EOPNOTSUPP although sysfs promised discard; trim is advisory.
    private volatile boolean discardRefused;

    private BlockDeviceBackend(NativeFile device, long size, int logicalSectorSize, int preferredBlockSize,
                               BlockDeviceQueue queue) {
        this.device = device;
        this.size = size;
        this.logicalSectorSize = logicalSectorSize;
        this.preferredBlockSize = preferredBlockSize;
        this.queue = queue;
    }

    static BlockDeviceBackend create(NativeFile device, FileStatus status) throws ErrnoException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment size = arena.allocate(JAVA_LONG);
            device.ioctl(BLKGETSIZE64, size, "ioctl(BLKGETSIZE64)");
            MemorySegment logical = arena.allocate(JAVA_INT);
            device.ioctl(BLKSSZGET, logical, "ioctl(BLKSSZGET)");
            MemorySegment physical = arena.allocate(JAVA_INT);
            device.ioctl(BLKPBSZGET, physical, "ioctl(BLKPBSZGET)");
            return new BlockDeviceBackend(
                    device,
                    size.get(JAVA_LONG, 0),
                    logical.get(JAVA_INT, 0),
                    Math.max(MIN_PREFERRED_BLOCK_SIZE, physical.get(JAVA_INT, 0)),
                    BlockDeviceQueue.of(status.deviceMajor(), status.deviceMinor()));
        }
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean readOnly() {
        return device.readOnly();
    }

    @Override
    public boolean rotational() {
        return queue.rotational();
    }

    @Override
    public int minimumBlockSize() {
        return logicalSectorSize;
    }

    @Override
    public int preferredBlockSize() {
        return preferredBlockSize;
    }

    /** False when read-only, like a sparse file, or when the queue takes no discards. */
    @Override
    public boolean supportsTrim() {
        return !device.readOnly() && queue.discardMaxBytes() > 0;
    }

    @Override
    public void read(long offset, ByteBuffer dst) throws ErrnoException {
        device.read(offset, dst);
    }

    @Override
    public void write(long offset, ByteBuffer src) throws ErrnoException {
        device.write(offset, src);
    }

    @Override
    public void flush() throws ErrnoException {
        device.fdatasync();
    }

    /** Discards the whole sectors inside the range; partial sectors at the edges are left alone. */
    @Override
    public void trim(long offset, long length) throws ErrnoException {
        requireWritable("ioctl(BLKDISCARD)");
        if (queue.discardMaxBytes() == 0 || discardRefused) {
            return;
        }
        long start = roundUp(offset);
        long end = roundDown(offset + length);
        if (start >= end) {
            return;
        }
        try {
            rangeIoctl(BLKDISCARD, "ioctl(BLKDISCARD)", start, end - start);
        } catch (ErrnoException e) {
            if (e.errno() != Errno.EOPNOTSUPP) {
                throw e;
            }
            discardRefused = true;
        }
    }

    /**
     * BLKZEROOUT never unmaps (the kernel passes NOUNMAP), so {@code mayPunchHole} changes nothing.
     * It is fast only when the device offloads write-zeroes; otherwise the kernel writes zero pages.
     */
    @Override
    public boolean writeZeroes(long offset, long length, boolean mayPunchHole, boolean fastOnly)
            throws ErrnoException {
        requireWritable("ioctl(BLKZEROOUT)");
        if (fastOnly && queue.writeZeroesMaxBytes() == 0) {
            return false;
        }
        long start = roundUp(offset);
        long end = roundDown(offset + length);
        if (start >= end) {
            device.writeZeroes(offset, length);
            return true;
        }
        // BLKZEROOUT takes whole logical sectors only; the partial ones at the edges are written.
        device.writeZeroes(offset, start - offset);
        rangeIoctl(BLKZEROOUT, "ioctl(BLKZEROOUT)", start, end - start);
        device.writeZeroes(end, offset + length - end);
        return true;
    }

    @Override
    public void cache(long offset, long length) throws ErrnoException {
        device.adviseWillNeed(offset, length);
    }

    /** A block device has no holes it will tell about: it is all data. */
    @Override
    public List<Extent> allocation(long offset, long length, int maxExtents) {
        return List.of(Extent.data(Math.min(length, size - offset)));
    }

    @Override
    public void close() throws ErrnoException {
        device.close();
    }

    private void rangeIoctl(long request, String requestName, long start, long length) throws ErrnoException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment range = arena.allocate(JAVA_LONG, 2);
            range.setAtIndex(JAVA_LONG, 0, start);
            range.setAtIndex(JAVA_LONG, 1, length);
            device.ioctl(request, range, requestName);
        }
    }

    private long roundUp(long offset) {
        return roundDown(offset + logicalSectorSize - 1);
    }

    private long roundDown(long offset) {
        return offset - offset % logicalSectorSize;
    }

    private void requireWritable(String call) throws ErrnoException {
        if (device.readOnly()) {
            throw new ErrnoException(call, device.path(), Errno.EROFS);
        }
    }
}
