package io.kubenbd.node.server;

import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.storage.Errno;
import io.kubenbd.node.storage.ErrnoException;

import java.io.IOException;

/** Maps a failed storage call to the NBD error the spec names for it. */
final class StorageErrors {
    private StorageErrors() {}

    static NbdError toNbd(IOException e) {
        if (!(e instanceof ErrnoException errno)) {
            return NbdError.EIO;
        }
        return switch (errno.errno()) {
            case Errno.EPERM, Errno.EACCES, Errno.EROFS -> NbdError.EPERM;
            case Errno.ENOSPC, Errno.EDQUOT, Errno.EFBIG -> NbdError.ENOSPC;
            case Errno.ENOMEM -> NbdError.ENOMEM;
            case Errno.EINVAL -> NbdError.EINVAL;
            case Errno.EOPNOTSUPP -> NbdError.ENOTSUP;
            case Errno.EOVERFLOW -> NbdError.EOVERFLOW;
            default -> NbdError.EIO;
        };
    }
}
