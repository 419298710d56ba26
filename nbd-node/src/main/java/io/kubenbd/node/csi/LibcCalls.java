package io.kubenbd.node.csi;

import io.kubenbd.node.storage.Errno;
import io.kubenbd.node.storage.ErrnoException;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;

/**
 * Calls into the C library through Java's FFM API with errno captured per call, for the
 * sockets the JDK cannot make (netlink, a unix socketpair whose descriptor goes to the kernel).
 * A failed call becomes an {@link ErrnoException}; EINTR is retried.
 */
// Linking native functions is restricted by design; native access is granted on the command line and manifest.
@SuppressWarnings("restricted")
final class LibcCalls {
    private static final Linker LINKER = Linker.nativeLinker();
    static final StructLayout CALL_STATE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = CALL_STATE.varHandle(MemoryLayout.PathElement.groupElement("errno"));

    private LibcCalls() {}

    @FunctionalInterface
    interface NativeCall {
        /** Makes the call with {@code state} receiving errno; returns the C result, negative on failure. */
        long invoke(MemorySegment state) throws Throwable;
    }

    /** Calls until the result is not an EINTR failure; a failure becomes an ErrnoException with the captured errno. */
    static long call(String name, String subject, NativeCall nativeCall) throws ErrnoException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(CALL_STATE);
            while (true) {
                long result = invoke(nativeCall, state);
                if (result >= 0) {
                    return result;
                }
                int errno = errno(state);
                if (errno != Errno.EINTR) {
                    throw new ErrnoException(name, subject, errno);
                }
            }
        }
    }

    static long invoke(NativeCall nativeCall, MemorySegment state) {
        try {
            return nativeCall.invoke(state);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("native call failed", t);
        }
    }

    static int errno(MemorySegment state) {
        return (int) ERRNO.get(state, 0L);
    }

    static MethodHandle downcall(String name, FunctionDescriptor descriptor) {
        return LINKER.downcallHandle(LINKER.defaultLookup().findOrThrow(name), descriptor,
                Linker.Option.captureCallState("errno"));
    }
}
