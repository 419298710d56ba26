package io.kubenbd.node.csi;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import io.kubenbd.node.storage.ErrnoException;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/**
 * A connected pair of unix stream sockets as raw descriptors: one end is given to the kernel's
 * nbd driver (which cannot speak TLS), the other is read and written here by the relay that
 * carries the bytes over the TLS connection to the server. Made with FFM because the JDK does
 * not hand out socket descriptors.
 */
final class UnixSocketPair implements AutoCloseable {
    private static final int AF_UNIX = 1;
    private static final int SOCK_STREAM = 1;
    private static final int SOCK_CLOEXEC = 0x80000;
    private static final int SHUT_RDWR = 2;

    private static final MethodHandle SOCKETPAIR = LibcCalls.downcall("socketpair",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS));
    private static final MethodHandle READ = LibcCalls.downcall("read",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG));
    private static final MethodHandle WRITE = LibcCalls.downcall("write",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG));
    private static final MethodHandle SHUTDOWN = LibcCalls.downcall("shutdown",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT));
    private static final MethodHandle CLOSE = LibcCalls.downcall("close",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT));

    private final int kernelEnd;
    private final int relayEnd;
    private boolean kernelEndClosed;
    private boolean closed;

    private UnixSocketPair(int kernelEnd, int relayEnd) {
        this.kernelEnd = kernelEnd;
        this.relayEnd = relayEnd;
    }

    static UnixSocketPair open() throws ErrnoException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment fds = arena.allocate(JAVA_INT, 2);
            LibcCalls.call("socketpair", "AF_UNIX SOCK_STREAM",
                    state -> (int) SOCKETPAIR.invokeExact(state, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
            return new UnixSocketPair(fds.getAtIndex(JAVA_INT, 0), fds.getAtIndex(JAVA_INT, 1));
        }
    }

    /** The descriptor for the kernel (NBD_SOCK_FD). */
    int kernelEnd() {
        return kernelEnd;
    }

    /** The descriptor the relay reads and writes. */
    int relayEnd() {
        return relayEnd;
    }

    /** Reads what is there (blocking until something is), up to {@code buffer.length}; 0 at end of stream. */
    static int read(int fd, byte[] buffer) throws ErrnoException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment segment = arena.allocate(buffer.length);
            int n = (int) LibcCalls.call("read", "socketpair",
                    state -> (long) READ.invokeExact(state, fd, segment, (long) buffer.length));
            MemorySegment.copy(segment, JAVA_BYTE, 0, buffer, 0, n);
            return n;
        }
    }

    static void writeFully(int fd, byte[] buffer, int offset, int length) throws ErrnoException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment segment = arena.allocate(Math.max(1, length));
            MemorySegment.copy(buffer, offset, segment, JAVA_BYTE, 0, length);
            long done = 0;
            while (done < length) {
                long from = done;
                done += LibcCalls.call("write", "socketpair",
                        state -> (long) WRITE.invokeExact(state, fd, segment.asSlice(from), (long) length - from));
            }
        }
    }

    /** Wakes a relay thread blocked in read: both directions end. */
    void shutdown() {
        try {
            LibcCalls.call("shutdown", "socketpair", state -> (int) SHUTDOWN.invokeExact(state, relayEnd, SHUT_RDWR));
        } catch (ErrnoException ignored) {
            // Already shut down or closed; the readers are awake either way.
        }
    }

    /** Closes this process's copy of the kernel's end once the kernel holds its own reference. */
    synchronized void closeKernelEnd() throws IOException {
        if (!kernelEndClosed) {
            kernelEndClosed = true;
            LibcCalls.call("close", "socketpair", state -> (int) CLOSE.invokeExact(state, kernelEnd));
        }
    }

    @Override
    public synchronized void close() throws IOException {
        if (closed) {
            return;
        }
        closed = true;
        try {
            closeKernelEnd();
        } finally {
            LibcCalls.call("close", "socketpair", state -> (int) CLOSE.invokeExact(state, relayEnd));
        }
    }
}
