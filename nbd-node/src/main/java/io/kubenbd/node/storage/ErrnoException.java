package io.kubenbd.node.storage;

import java.io.IOException;

/** A system call failed; {@link #errno()} is the exact number so callers can map it (to NBD errors). */
public final class ErrnoException extends IOException {
    private static final long serialVersionUID = 1L;

    private final int errno;

    /**
     * @param call    the failed system call or ioctl, e.g. {@code "pwrite"}
     * @param subject what it was called on, usually the path
     */
    public ErrnoException(String call, String subject, int errno) {
        this(call, subject, errno, null);
    }

    /** @param detail why the call failed when that is not the system's own answer, or null */
    public ErrnoException(String call, String subject, int errno, String detail) {
        super(call + " " + subject + ": " + Errno.describe(errno) + (detail == null ? "" : "; " + detail));
        this.errno = errno;
    }

    public int errno() {
        return errno;
    }
}
