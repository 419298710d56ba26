package io.kubenbd.node.storage;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * An open file descriptor with positional, full-length I/O. Safe for concurrent use: nothing
 * but the descriptor is shared, and pread/pwrite carry their own offsets.
 */
final class NativeFile implements AutoCloseable {
    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(NativeFile.class);
    // Heap buffers go through native memory; bounding the bounce buffer bounds the copy cost.
    private static final int BOUNCE_BUFFER_SIZE = 1 << 20;
    private static final MemorySegment ZEROES = Arena.global().allocate(BOUNCE_BUFFER_SIZE, 4096);

    private final int fd;
    private final String path;
    private final boolean readOnly;
    private final AtomicBoolean closed = new AtomicBoolean();
    private final Object syncLock = new Object();
    /** The first fdatasync failure, kept for every later call (see {@link #fdatasync}); guarded by syncLock. */
    private ErrnoException writebackFailure;

    private NativeFile(int fd, String path, boolean readOnly) {
        this.fd = fd;
        this.path = path;
        this.readOnly = readOnly;
    }

    static NativeFile open(Path path, boolean readOnly) throws ErrnoException {
        String name = path.toString();
        int flags = (readOnly ? LinuxSyscalls.O_RDONLY : LinuxSyscalls.O_RDWR) | LinuxSyscalls.O_CLOEXEC;
        return new NativeFile(LinuxSyscalls.open(name, flags), name, readOnly);
    }

    String path() {
        return path;
    }

    boolean readOnly() {
        return readOnly;
    }

    FileStatus status() throws ErrnoException {
        return LinuxSyscalls.fstat(fd, path);
    }

    /** Fills {@code dst} from position to limit, leaving its position at its limit. */
    void read(long offset, ByteBuffer dst) throws ErrnoException {
        if (dst.isDirect()) {
            readFully(offset, MemorySegment.ofBuffer(dst));
        } else {
            MemorySegment heap = MemorySegment.ofBuffer(dst);
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment bounce = arena.allocate(Math.min(heap.byteSize(), BOUNCE_BUFFER_SIZE), 4096);
                for (long done = 0; done < heap.byteSize(); ) {
                    long chunk = Math.min(heap.byteSize() - done, bounce.byteSize());
                    readFully(offset + done, bounce.asSlice(0, chunk));
                    MemorySegment.copy(bounce, 0, heap, done, chunk);
                    done += chunk;
                }
            }
        }
        dst.position(dst.limit());
    }

    /** Writes {@code src} from position to limit, leaving its position at its limit. */
    void write(long offset, ByteBuffer src) throws ErrnoException {
        requireWritable("pwrite");
        if (src.isDirect()) {
            writeFully(offset, MemorySegment.ofBuffer(src));
        } else {
            MemorySegment heap = MemorySegment.ofBuffer(src);
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment bounce = arena.allocate(Math.min(heap.byteSize(), BOUNCE_BUFFER_SIZE), 4096);
                for (long done = 0; done < heap.byteSize(); ) {
                    long chunk = Math.min(heap.byteSize() - done, bounce.byteSize());
                    MemorySegment.copy(heap, done, bounce, 0, chunk);
                    writeFully(offset + done, bounce.asSlice(0, chunk));
                    done += chunk;
                }
            }
        }
        src.position(src.limit());
    }

    /** Writes zero bytes over the range: the slow way, for when nothing can do it for us. */
    void writeZeroes(long offset, long length) throws ErrnoException {
        requireWritable("pwrite");
        for (long done = 0; done < length; ) {
            long chunk = Math.min(length - done, ZEROES.byteSize());
            writeFully(offset + done, ZEROES.asSlice(0, chunk));
            done += chunk;
        }
    }

    void fallocate(int mode, long offset, long length) throws ErrnoException {
        requireWritable("fallocate");
        LinuxSyscalls.fallocate(fd, mode, offset, length, path);
    }

    long seek(long offset, int whence) throws ErrnoException {
        return LinuxSyscalls.lseek(fd, offset, whence, path);
    }

    void ioctl(long request, MemorySegment argument, String requestName) throws ErrnoException {
        LinuxSyscalls.ioctl(fd, request, argument, requestName, path);
    }

    void adviseWillNeed(long offset, long length) throws ErrnoException {
        LinuxSyscalls.posixFadvise(fd, offset, length, LinuxSyscalls.POSIX_FADV_WILLNEED, path);
    }

    /**
     * Makes written data durable, and keeps failing once it has failed. Linux reports a lost
     * writeback (an I/O error while writing cached pages back) to one fdatasync of the open
     * file and then forgets it: the pages are clean again, their data gone. Whichever sync saw
     * it (a client's FLUSH, another connection's, an internal one after a copy-up), every later
     * one would succeed on lost data. So the first failure is kept and every later call fails
     * with EIO (as PostgreSQL learned to treat fsync failures); only reopening the file (a
     * restart, after a person checked the disk) clears it. Calls are serialized so that a sync
     * running beside the one that got the error cannot report success either.
     */
    void fdatasync() throws ErrnoException {
        synchronized (syncLock) {
            if (writebackFailure != null) {
                throw new ErrnoException("fdatasync", path, Errno.EIO,
                        "an earlier flush failed with " + Errno.describe(writebackFailure.errno())
                                + ", so data written before it may be lost");
            }
            try {
                LinuxSyscalls.fdatasync(fd, path);
            } catch (ErrnoException e) {
                writebackFailure = e;
                log.error("{}: flush failed, data written since the last successful flush may be lost; every later"
                        + " FLUSH and FUA write on it fails with EIO until the export is reopened: {}", path, e.getMessage());
                throw e;
            }
        }
    }

    /** Takes an exclusive lock without waiting; EAGAIN (EWOULDBLOCK) if someone else holds it. Released on close. */
    void lockExclusively() throws ErrnoException {
        LinuxSyscalls.flock(fd, LinuxSyscalls.LOCK_EX | LinuxSyscalls.LOCK_NB, path);
    }

    /** Closes the descriptor once; later calls do nothing. */
    @Override
    public void close() throws ErrnoException {
        if (closed.compareAndSet(false, true)) {
            LinuxSyscalls.close(fd, path);
        }
    }

    private void readFully(long offset, MemorySegment target) throws ErrnoException {
        long done = 0;
        while (done < target.byteSize()) {
            long n = LinuxSyscalls.pread(fd, target.asSlice(done), offset + done, path);
            if (n == 0) {
                // End of file inside the export: the file shrank under us. Holes read as zeroes, so does this.
                target.asSlice(done).fill((byte) 0);
                return;
            }
            done += n;
        }
    }

    private void writeFully(long offset, MemorySegment source) throws ErrnoException {
        long done = 0;
        while (done < source.byteSize()) {
            long n = LinuxSyscalls.pwrite(fd, source.asSlice(done), offset + done, path);
            if (n == 0) {
                // pwrite of a non-empty buffer making no progress would spin forever; the kernel reports
                // real failures as errors, so this is a device that silently refuses data.
                throw new ErrnoException("pwrite", path, Errno.EIO);
            }
            done += n;
        }
    }

    private void requireWritable(String call) throws ErrnoException {
        if (readOnly) {
            throw new ErrnoException(call, path, Errno.EROFS);
        }
    }
}
