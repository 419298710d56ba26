package io.kubenbd.node.csi;

import java.io.IOException;
import java.nio.file.Path;

/**
 * An export attached on this node as a block device: through the kernel's nbd driver, or in
 * user space through FUSE and a loop device. Closed in teardown order after the caller unmounted.
 */
sealed interface Attachment extends AutoCloseable permits KernelAttachment, UserspaceAttachment {
    Path device();

    long size();

    /** Picks up a larger export and returns the new size. */
    long expand() throws IOException;

    /** Why I/O is failing or waiting now, or null while it works: the volume condition. */
    String failure();

    @Override
    void close() throws IOException;
}
