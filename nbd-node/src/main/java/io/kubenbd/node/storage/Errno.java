package io.kubenbd.node.storage;

/**
 * Linux errno numbers that the storage layer produces or the server maps to NBD errors.
 * The values are those of the generic Linux ABI (x86_64, aarch64), not of POSIX.
 */
public final class Errno {
    public static final int EPERM = 1;
    public static final int ENOENT = 2;
    public static final int EINTR = 4;
    public static final int EIO = 5;
    public static final int ENXIO = 6;
    public static final int EBADF = 9;
    public static final int EAGAIN = 11;
    public static final int ENOMEM = 12;
    public static final int EACCES = 13;
    public static final int EFAULT = 14;
    public static final int EBUSY = 16;
    public static final int EEXIST = 17;
    public static final int ENODEV = 19;
    public static final int ENOTDIR = 20;
    public static final int EISDIR = 21;
    public static final int EINVAL = 22;
    public static final int ENOTTY = 25;
    public static final int EFBIG = 27;
    public static final int ENOSPC = 28;
    public static final int ESPIPE = 29;
    public static final int EROFS = 30;
    public static final int EOVERFLOW = 75;
    /** Linux has one number for both EOPNOTSUPP and ENOTSUP. */
    public static final int EOPNOTSUPP = 95;
    public static final int EDQUOT = 122;

    private Errno() {
    }

    /** The symbolic name and text of {@code errno}, in the spirit of strerror(3). */
    public static String describe(int errno) {
        return switch (errno) {
            case EPERM -> "EPERM (Operation not permitted)";
            case ENOENT -> "ENOENT (No such file or directory)";
            case EINTR -> "EINTR (Interrupted system call)";
            case EIO -> "EIO (Input/output error)";
            case ENXIO -> "ENXIO (No such device or address)";
            case EBADF -> "EBADF (Bad file descriptor)";
            case EAGAIN -> "EAGAIN (Resource temporarily unavailable)";
            case ENOMEM -> "ENOMEM (Cannot allocate memory)";
            case EACCES -> "EACCES (Permission denied)";
            case EFAULT -> "EFAULT (Bad address)";
            case EBUSY -> "EBUSY (Device or resource busy)";
            case EEXIST -> "EEXIST (File exists)";
            case ENODEV -> "ENODEV (No such device)";
            case ENOTDIR -> "ENOTDIR (Not a directory)";
            case EISDIR -> "EISDIR (Is a directory)";
            case EINVAL -> "EINVAL (Invalid argument)";
            case ENOTTY -> "ENOTTY (Inappropriate ioctl for device)";
            case EFBIG -> "EFBIG (File too large)";
            case ENOSPC -> "ENOSPC (No space left on device)";
            case ESPIPE -> "ESPIPE (Illegal seek)";
            case EROFS -> "EROFS (Read-only file system)";
            case EOVERFLOW -> "EOVERFLOW (Value too large for defined data type)";
            case EOPNOTSUPP -> "EOPNOTSUPP (Operation not supported)";
            case EDQUOT -> "EDQUOT (Disk quota exceeded)";
            default -> "errno " + errno;
        };
    }
}
