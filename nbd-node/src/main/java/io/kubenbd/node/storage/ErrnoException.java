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
        super(call + " " + subject + ": " + Errno.describe(errno));
        this.errno = errno;
    }

    public int errno() {
        return errno;
    }
}
