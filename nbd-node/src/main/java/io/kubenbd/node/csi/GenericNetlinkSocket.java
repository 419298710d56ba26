package io.kubenbd.node.csi;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import io.kubenbd.node.storage.Errno;
import io.kubenbd.node.storage.ErrnoException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.net.ProtocolException;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A {@code NETLINK_GENERIC} socket to the kernel, opened and driven through the C library with
 * Java's FFM API (the JDK has no netlink sockets). It sends one request at a time and collects
 * the replies up to the kernel's ACK, turning an error answer into an {@link ErrnoException}
 * with the kernel's errno. Every wait for the kernel is bounded by the receive timeout, so a
 * request that is never answered fails with {@link SocketTimeoutException} instead of hanging a
 * CSI call. Requests and {@link #close} are serialised, so the socket may be shared.
 */
// Linking native functions is restricted by design; native access is granted on the command line and manifest.
@SuppressWarnings("restricted")
final class GenericNetlinkSocket implements AutoCloseable {
    private static final int AF_NETLINK = 16;
    private static final int SOCK_RAW = 3;
    private static final int SOCK_CLOEXEC = 0x80000;
    private static final int NETLINK_GENERIC = 16;
    private static final int SOL_SOCKET = 1;
    /** The 64-bit-time_t SO_RCVTIMEO of x86_64 and aarch64: a {@code struct timeval} of two longs. */
    private static final int SO_RCVTIMEO = 20;
    private static final long TIMEVAL_SIZE = 16;
    private static final int MSG_PEEK = 0x2;
    /** With MSG_PEEK, makes netlink's recv return the datagram's full length even into a small buffer. */
    private static final int MSG_TRUNC = 0x20;
    /** {@code struct sockaddr_nl}: u16 nl_family, u16 pad, u32 nl_pid, u32 nl_groups. */
    private static final long SOCKADDR_NL_SIZE = 12;
    private static final long NL_PID_OFFSET = 4;

    private static final MethodHandle SOCKET = LibcCalls.downcall("socket",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
    private static final MethodHandle BIND = LibcCalls.downcall("bind",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle GETSOCKNAME = LibcCalls.downcall("getsockname",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, ADDRESS));
    private static final MethodHandle SETSOCKOPT = LibcCalls.downcall("setsockopt",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle SENDTO = LibcCalls.downcall("sendto",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle RECV = LibcCalls.downcall("recv",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
    private static final MethodHandle CLOSE = LibcCalls.downcall("close",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT));

    private final int fd;
    private final int portId;
    private final Duration receiveTimeout;
    private final AtomicInteger sequence = new AtomicInteger();
    private boolean closed;

    private GenericNetlinkSocket(int fd, int portId, Duration receiveTimeout) {
        this.fd = fd;
        this.portId = portId;
        this.receiveTimeout = receiveTimeout;
    }

    /**
     * Opens a socket bound to a port the kernel picks.
     *
     * @param receiveTimeout the longest a request waits for the kernel's complete answer
     */
    static GenericNetlinkSocket open(Duration receiveTimeout) throws ErrnoException {
        if (receiveTimeout.isNegative() || receiveTimeout.isZero()) {
            throw new IllegalArgumentException("receive timeout must be positive: " + receiveTimeout);
        }
        int fd = (int) LibcCalls.call("socket", "AF_NETLINK NETLINK_GENERIC",
                state -> (int) SOCKET.invokeExact(state, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment address = kernelAddress(arena);
            LibcCalls.call("bind", "generic netlink socket",
                    state -> (int) BIND.invokeExact(state, fd, address, (int) SOCKADDR_NL_SIZE));
            MemorySegment bound = arena.allocate(SOCKADDR_NL_SIZE, 4);
            MemorySegment boundLength = arena.allocateFrom(JAVA_INT, (int) SOCKADDR_NL_SIZE);
            LibcCalls.call("getsockname", "generic netlink socket",
                    state -> (int) GETSOCKNAME.invokeExact(state, fd, bound, boundLength));
            return new GenericNetlinkSocket(fd, bound.get(JAVA_INT, NL_PID_OFFSET), receiveTimeout);
        } catch (ErrnoException | RuntimeException e) {
            closeQuietly(fd, e);
            throw e;
        }
    }

    /** The port the kernel bound this socket to; it addresses replies to it ({@code nlmsg_pid}). */
    int portId() {
        return portId;
    }

    /** A fresh {@code nlmsg_seq} for the next request, so stale replies can be told apart. */
    int nextSequence() {
        return sequence.incrementAndGet();
    }

    /**
     * The id of a generic netlink family, which families only get when they register.
     *
     * @throws NetlinkFamilyNotFoundException when the kernel has no such family (ENOENT)
     */
    int resolveFamily(String familyName) throws IOException {
        GenericNetlinkFamilyRequest lookup = new GenericNetlinkFamilyRequest(familyName);
        try {
            return lookup.familyIdFrom(
                    request("CTRL_CMD_GETFAMILY '" + familyName + "'", lookup.encode(nextSequence(), portId)));
        } catch (ErrnoException e) {
            if (e.errno() == Errno.ENOENT) {
                throw new NetlinkFamilyNotFoundException(familyName, e);
            }
            throw e;
        }
    }

    /**
     * Sends one request and returns the family's replies to it, once the kernel has acknowledged
     * it. Messages carrying another sequence number (answers to an earlier request that timed
     * out) are skipped.
     *
     * @param description what the request does, for error messages
     * @param message     one complete netlink message asking for an ACK ({@code NLM_F_ACK}), or the
     *                    wait ends only in the timeout
     * @throws ErrnoException         the kernel refused the request; {@link ErrnoException#errno()} says why
     * @throws SocketTimeoutException the complete answer did not arrive within the receive timeout
     */
    synchronized List<GenericNetlinkMessage> request(String description, byte[] message) throws IOException {
        if (closed) {
            throw new IOException("generic netlink socket is closed");
        }
        ByteBuffer header = ByteBuffer.wrap(message).order(ByteOrder.nativeOrder());
        if (message.length < NetlinkMessage.HEADER_LENGTH || header.getInt(0) != message.length) {
            throw new IllegalArgumentException("not one complete netlink message: " + message.length + " bytes");
        }
        int requestSequence = header.getInt(8);
        send(description, message);
        long deadline = System.nanoTime() + receiveTimeout.toNanos();
        List<GenericNetlinkMessage> replies = new ArrayList<>();
        while (true) {
            for (NetlinkMessage reply : NetlinkMessage.parseAll(receive(description, deadline))) {
                if (reply.sequence() != requestSequence || reply.type() == NetlinkMessage.NLMSG_NOOP) {
                    continue;
                }
                if (reply.type() == NetlinkMessage.NLMSG_DONE) {
                    return List.copyOf(replies);
                }
                if (reply.isError()) {
                    int errno = reply.errno();
                    if (errno == 0) {
                        return List.copyOf(replies);
                    }
                    throw new ErrnoException("netlink", description, errno);
                }
                replies.add(GenericNetlinkMessage.parse(reply));
            }
        }
    }

    /** Not retried on EINTR: Linux releases the descriptor even then. Waits for a request in progress. */
    @Override
    public synchronized void close() throws ErrnoException {
        if (closed) {
            return;
        }
        closed = true;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(LibcCalls.CALL_STATE);
            if (LibcCalls.invoke(st -> (int) CLOSE.invokeExact(st, fd), state) < 0) {
                throw new ErrnoException("close", "generic netlink socket", LibcCalls.errno(state));
            }
        }
    }

    private void send(String description, byte[] message) throws IOException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buffer = arena.allocateFrom(JAVA_BYTE, message);
            MemorySegment kernel = kernelAddress(arena);
            long sent = LibcCalls.call("sendto", description, state -> (long) SENDTO.invokeExact(
                    state, fd, buffer, buffer.byteSize(), 0, kernel, (int) SOCKADDR_NL_SIZE));
            if (sent != message.length) {
                throw new ProtocolException("netlink sent " + sent + " of " + message.length + " bytes of " + description);
            }
        }
    }

    /**
     * One whole datagram. A peek with MSG_TRUNC learns its size first, so no reply is cut short
     * whatever its length (a STATUS of many devices is larger than a page).
     */
    private ByteBuffer receive(String description, long deadline) throws IOException {
        long remaining = deadline - System.nanoTime();
        if (remaining <= 0) {
            throw timeout(description, null);
        }
        try (Arena arena = Arena.ofConfined()) {
            // Rounded up so that the last nanoseconds do not turn into 0, which means "wait forever".
            long micros = (remaining + 999) / 1_000;
            MemorySegment timeval = arena.allocate(TIMEVAL_SIZE, 8);
            timeval.set(JAVA_LONG, 0, micros / 1_000_000);
            timeval.set(JAVA_LONG, 8, micros % 1_000_000);
            LibcCalls.call("setsockopt", "SO_RCVTIMEO", state -> (int) SETSOCKOPT.invokeExact(
                    state, fd, SOL_SOCKET, SO_RCVTIMEO, timeval, (int) TIMEVAL_SIZE));
            try {
                MemorySegment probe = arena.allocate(NetlinkMessage.HEADER_LENGTH);
                long length = LibcCalls.call("recv", description, state -> (long) RECV.invokeExact(
                        state, fd, probe, probe.byteSize(), MSG_PEEK | MSG_TRUNC));
                MemorySegment datagram = arena.allocate(Math.max(length, 1));
                long received = LibcCalls.call("recv", description, state -> (long) RECV.invokeExact(
                        state, fd, datagram, datagram.byteSize(), 0));
                return ByteBuffer.wrap(datagram.asSlice(0, received).toArray(JAVA_BYTE));
            } catch (ErrnoException e) {
                if (e.errno() == Errno.EAGAIN) {
                    throw timeout(description, e);
                }
                throw e;
            }
        }
    }

    private SocketTimeoutException timeout(String description, ErrnoException cause) {
        SocketTimeoutException timeout = new SocketTimeoutException(
                "no complete reply from the kernel to " + description + " within " + receiveTimeout.toMillis() + " ms");
        timeout.initCause(cause);
        return timeout;
    }

    /** {@code struct sockaddr_nl} of the kernel (port 0, no multicast groups), also what bind wants for "any port". */
    private static MemorySegment kernelAddress(Arena arena) {
        MemorySegment address = arena.allocate(SOCKADDR_NL_SIZE, 4);
        address.set(JAVA_SHORT, 0, (short) AF_NETLINK);
        return address;
    }

    private static void closeQuietly(int fd, Exception failure) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(LibcCalls.CALL_STATE);
            if (LibcCalls.invoke(st -> (int) CLOSE.invokeExact(st, fd), state) < 0) {
                failure.addSuppressed(new ErrnoException("close", "generic netlink socket", LibcCalls.errno(state)));
            }
        }
    }
}
