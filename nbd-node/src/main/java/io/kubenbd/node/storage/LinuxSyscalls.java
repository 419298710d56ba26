package io.kubenbd.node.storage;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;

/**
 * Downcalls into the C library for the file system calls the JDK does not expose
 * (fallocate modes, SEEK_DATA/SEEK_HOLE, block-device ioctls, fadvise, statx).
 * Every wrapper retries on EINTR (except close) and turns a failure into an
 * {@link ErrnoException} carrying the errno captured right after the call, before the
 * JVM can clobber it.
 */
// Linking native functions is restricted by design; native access is granted on the command line and manifest.
@SuppressWarnings("restricted")
final class LinuxSyscalls {
    static final int O_RDONLY = 0;
    static final int O_RDWR = 2;
    static final int O_CLOEXEC = 0x80000;

    static final int SEEK_DATA = 3;
    static final int SEEK_HOLE = 4;

    static final int FALLOC_FL_KEEP_SIZE = 0x01;
    static final int FALLOC_FL_PUNCH_HOLE = 0x02;
    static final int FALLOC_FL_ZERO_RANGE = 0x10;

    static final int POSIX_FADV_WILLNEED = 3;

    private static final int AT_FDCWD = -100;
    private static final int AT_EMPTY_PATH = 0x1000;
    private static final int STATX_TYPE = 0x1;
    private static final int STATX_MODE = 0x2;
    private static final int STATX_SIZE = 0x200;
    private static final int STATX_BLOCKS = 0x400;
    // struct statx is the same on every architecture, unlike struct stat.
    private static final long STATX_STRUCT_SIZE = 256;
    private static final long STX_MODE_OFFSET = 28;
    private static final long STX_SIZE_OFFSET = 40;
    private static final long STX_BLOCKS_OFFSET = 48;
    private static final long STX_RDEV_MAJOR_OFFSET = 128;
    private static final long STX_RDEV_MINOR_OFFSET = 132;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final StructLayout CALL_STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO =
            CALL_STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    private static final ThreadLocal<MemorySegment> CALL_STATE_BUFFER =
            ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(CALL_STATE));

    private static final MethodHandle OPEN = downcall("open",
            FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle CLOSE = downcall("close",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT));
    private static final MethodHandle PREAD = downcall("pread",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG));
    private static final MethodHandle PWRITE = downcall("pwrite",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG));
    private static final MethodHandle FDATASYNC = downcall("fdatasync",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT));
    private static final MethodHandle FLOCK = downcall("flock",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT));
    static final int LOCK_EX = 2;
    static final int LOCK_NB = 4;
    private static final MethodHandle FALLOCATE = downcall("fallocate",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG));
    private static final MethodHandle LSEEK = downcall("lseek",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT));
    // ioctl is variadic after the request; the pointer must be passed as a variadic argument.
    private static final MethodHandle IOCTL = downcall("ioctl",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS),
            Linker.Option.firstVariadicArg(2));
    private static final MethodHandle STATX = downcall("statx",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, ADDRESS));
    // posix_fadvise returns the error number instead of setting errno.
    private static final MethodHandle POSIX_FADVISE = LINKER.downcallHandle(
            LINKER.defaultLookup().findOrThrow("posix_fadvise"),
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT));

    private LinuxSyscalls() {
    }

    static int open(String path, int flags) throws ErrnoException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment cPath = arena.allocateFrom(path);
            return (int) retrying("open", path, state -> (int) OPEN.invokeExact(state, cPath, flags));
        }
    }

    /** Not retried on EINTR: Linux releases the descriptor even then, and it may be reused already. */
    static void close(int fd, String subject) throws ErrnoException {
        MemorySegment state = CALL_STATE_BUFFER.get();
        long result = invoke(st -> (int) CLOSE.invokeExact(st, fd), state);
        if (result < 0) {
            throw new ErrnoException("close", subject, errno(state));
        }
    }

    static long pread(int fd, MemorySegment buffer, long offset, String subject) throws ErrnoException {
        return retrying("pread", subject,
                state -> (long) PREAD.invokeExact(state, fd, buffer, buffer.byteSize(), offset));
    }

    static long pwrite(int fd, MemorySegment buffer, long offset, String subject) throws ErrnoException {
        return retrying("pwrite", subject,
                state -> (long) PWRITE.invokeExact(state, fd, buffer, buffer.byteSize(), offset));
    }

    static void fdatasync(int fd, String subject) throws ErrnoException {
        retrying("fdatasync", subject, state -> (int) FDATASYNC.invokeExact(state, fd));
    }

    /** flock(2): per open file description, so it also conflicts with a second open in this process. */
    static void flock(int fd, int operation, String subject) throws ErrnoException {
        retrying("flock", subject, state -> (int) FLOCK.invokeExact(state, fd, operation));
    }

    static void fallocate(int fd, int mode, long offset, long length, String subject) throws ErrnoException {
        retrying("fallocate", subject,
                state -> (int) FALLOCATE.invokeExact(state, fd, mode, offset, length));
    }

    static long lseek(int fd, long offset, int whence, String subject) throws ErrnoException {
        return retrying("lseek", subject, state -> (long) LSEEK.invokeExact(state, fd, offset, whence));
    }

    static void ioctl(int fd, long request, MemorySegment argument, String requestName, String subject)
            throws ErrnoException {
        retrying(requestName, subject, state -> (int) IOCTL.invokeExact(state, fd, request, argument));
    }

    static void posixFadvise(int fd, long offset, long length, int advice, String subject) throws ErrnoException {
        int error;
        try {
            error = (int) POSIX_FADVISE.invokeExact(fd, offset, length, advice);
        } catch (Throwable t) {
            throw unexpected(t);
        }
        if (error != 0) {
            throw new ErrnoException("posix_fadvise", subject, error);
        }
    }

    /** Status of the file behind {@code path}, following symbolic links. */
    static FileStatus stat(String path) throws ErrnoException {
        return statx(AT_FDCWD, path, 0, path);
    }

    /** Status of the open file {@code fd}. */
    static FileStatus fstat(int fd, String subject) throws ErrnoException {
        return statx(fd, "", AT_EMPTY_PATH, subject);
    }

    private static FileStatus statx(int dirFd, String path, int flags, String subject) throws ErrnoException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment cPath = arena.allocateFrom(path);
            MemorySegment buffer = arena.allocate(STATX_STRUCT_SIZE, 8);
            int mask = STATX_TYPE | STATX_MODE | STATX_SIZE | STATX_BLOCKS;
            retrying("statx", subject,
                    state -> (int) STATX.invokeExact(state, dirFd, cPath, flags, mask, buffer));
            return new FileStatus(
                    Short.toUnsignedInt(buffer.get(JAVA_SHORT, STX_MODE_OFFSET)),
                    buffer.get(JAVA_LONG, STX_SIZE_OFFSET),
                    buffer.get(JAVA_LONG, STX_BLOCKS_OFFSET) * FileStatus.BLOCK_UNIT,
                    buffer.get(JAVA_INT, STX_RDEV_MAJOR_OFFSET),
                    buffer.get(JAVA_INT, STX_RDEV_MINOR_OFFSET));
        }
    }

    @FunctionalInterface
    private interface NativeCall {
        /** Makes the call with {@code state} receiving errno; returns the C result, negative on failure. */
        long invoke(MemorySegment state) throws Throwable;
    }

    private static long retrying(String call, String subject, NativeCall nativeCall) throws ErrnoException {
        MemorySegment state = CALL_STATE_BUFFER.get();
        while (true) {
            long result = invoke(nativeCall, state);
            if (result >= 0) {
                return result;
            }
            int errno = errno(state);
            if (errno != Errno.EINTR) {
                throw new ErrnoException(call, subject, errno);
            }
        }
    }

    private static long invoke(NativeCall nativeCall, MemorySegment state) {
        try {
            return nativeCall.invoke(state);
        } catch (Throwable t) {
            throw unexpected(t);
        }
    }

    private static int errno(MemorySegment state) {
        return (int) ERRNO.get(state, 0L);
    }

    private static RuntimeException unexpected(Throwable t) {
        return switch (t) {
            case RuntimeException e -> e;
            case Error e -> throw e;
            default -> new IllegalStateException("native call failed", t);
        };
    }

    private static MethodHandle downcall(String name, FunctionDescriptor descriptor, Linker.Option... extra) {
        Linker.Option[] options = new Linker.Option[extra.length + 1];
        options[0] = Linker.Option.captureCallState("errno");
        System.arraycopy(extra, 0, options, 1, extra.length);
        return LINKER.downcallHandle(LINKER.defaultLookup().findOrThrow(name), descriptor, options);
    }
}
