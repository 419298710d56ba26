package io.kubenbd.node.storage;

import java.io.IOException;
import java.nio.file.Path;

/** Picks the backend for a path by what the path turns out to be. */
final class StorageBackends {
    private StorageBackends() {
    }

    static StorageBackend open(Path path, boolean readOnly) throws IOException {
        // Checked before opening: opening a FIFO read-only would block until a writer appears.
        requireFileOrDevice(path, LinuxSyscalls.stat(path.toString()));
        NativeFile file = NativeFile.open(path, readOnly);
        try {
            // Checked again on the descriptor, since the path may have been replaced in between.
            FileStatus status = file.status();
            return switch (status.kind()) {
                case REGULAR_FILE -> SparseFileBackend.open(file, status.size());
                case BLOCK_DEVICE -> BlockDeviceBackend.create(file, status);
                case OTHER -> throw notFileOrDevice(path);
            };
        } catch (IOException | RuntimeException e) {
            try {
                file.close();
            } catch (IOException closeFailure) {
                e.addSuppressed(closeFailure);
            }
            throw e;
        }
    }

    private static void requireFileOrDevice(Path path, FileStatus status) throws IOException {
        if (status.kind() == FileStatus.Kind.OTHER) {
            throw notFileOrDevice(path);
        }
    }

    private static IOException notFileOrDevice(Path path) {
        return new IOException(path + " is neither a regular file nor a block device");
    }
}
