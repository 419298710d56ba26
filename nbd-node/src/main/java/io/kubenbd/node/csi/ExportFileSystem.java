package io.kubenbd.node.csi;

import io.kubenbd.node.client.NbdCommandException;
import io.kubenbd.node.protocol.NbdError;
import org.cryptomator.jfuse.api.DirFiller;
import org.cryptomator.jfuse.api.Errno;
import org.cryptomator.jfuse.api.FileInfo;
import org.cryptomator.jfuse.api.FuseOperations;
import org.cryptomator.jfuse.api.Stat;
import org.cryptomator.jfuse.api.Statvfs;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.EnumSet;
import java.util.Set;

/**
 * A FUSE filesystem holding one file, {@code /disk}, whose bytes are the NBD export: reads and
 * writes become NBD requests on the volume's connections, and fsync becomes NBD_CMD_FLUSH
 * (without fsync every flush from the filesystem on the loop device above would do nothing).
 * Unknown paths are ENOENT; the file cannot be resized, created or removed.
 */
final class ExportFileSystem implements FuseOperations {
    static final String FILE = "disk";
    private static final Logger log = LoggerFactory.getLogger(ExportFileSystem.class);

    private final String volumeId;
    private final ExportConnections connections;
    private final Errno errno;
    private final boolean readOnly;
    private volatile long size;

    ExportFileSystem(String volumeId, ExportConnections connections, Errno errno, boolean readOnly) {
        this.volumeId = volumeId;
        this.connections = connections;
        this.errno = errno;
        this.readOnly = readOnly;
        this.size = connections.export().size();
    }

    /** Takes the export's new size (after NodeExpandVolume asked the server again). */
    void resize(long newSize) {
        size = newSize;
    }

    long size() {
        return size;
    }

    @Override
    public Errno errno() {
        return errno;
    }

    @Override
    public Set<Operation> supportedOperations() {
        return EnumSet.of(Operation.GET_ATTR, Operation.OPEN, Operation.READ, Operation.WRITE, Operation.FLUSH,
                Operation.FSYNC, Operation.RELEASE, Operation.STATFS, Operation.TRUNCATE, Operation.OPEN_DIR,
                Operation.READ_DIR, Operation.RELEASE_DIR);
    }

    @Override
    public int getattr(String path, Stat stat, FileInfo fi) {
        if ("/".equals(path)) {
            stat.setMode(Stat.S_IFDIR | 0755);
            stat.setNLink((short) 2);
            return 0;
        }
        if (("/" + FILE).equals(path)) {
            stat.setMode(Stat.S_IFREG | (readOnly ? 0400 : 0600));
            stat.setNLink((short) 1);
            stat.setSize(size);
            return 0;
        }
        return -errno.enoent();
    }

    @Override
    public int readdir(String path, DirFiller filler, long offset, FileInfo fi, int flags) {
        if (!"/".equals(path)) {
            return -errno.enoent();
        }
        try {
            filler.fill(".");
            filler.fill("..");
            filler.fill(FILE);
            return 0;
        } catch (IOException e) {
            return -errno.eio();
        }
    }

    @Override
    public int opendir(String path, FileInfo fi) {
        return "/".equals(path) ? 0 : -errno.enoent();
    }

    @Override
    public int releasedir(String path, FileInfo fi) {
        return 0;
    }

    @Override
    public int open(String path, FileInfo fi) {
        if (!("/" + FILE).equals(path)) {
            return -errno.enoent();
        }
        boolean writing = fi.getOpenFlags().contains(java.nio.file.StandardOpenOption.WRITE);
        return readOnly && writing ? -errno.erofs() : 0;
    }

    @Override
    public int read(String path, ByteBuffer buf, long count, long offset, FileInfo fi) {
        if (offset >= size) {
            return 0;
        }
        int length = (int) Math.min(count, size - offset);
        try {
            byte[] data = connections.call(client -> client.read(offset, length));
            buf.put(data, 0, length);
            return length;
        } catch (IOException e) {
            return failed("read", offset, length, e);
        }
    }

    @Override
    public int write(String path, ByteBuffer buf, long count, long offset, FileInfo fi) {
        if (readOnly) {
            return -errno.erofs();
        }
        if (offset + count > size) {
            return -NbdError.ENOSPC.code(); // NBD's error numbers are Linux's; jfuse's Errno has no ENOSPC
        }
        byte[] data = new byte[(int) count];
        buf.get(data);
        try {
            connections.call(client -> {
                client.write(offset, data, 0);
                return null;
            });
            return data.length;
        } catch (IOException e) {
            return failed("write", offset, data.length, e);
        }
    }

    @Override
    public int fsync(String path, int datasync, FileInfo fi) {
        return flushExport();
    }

    @Override
    public int flush(String path, FileInfo fi) {
        return readOnly ? 0 : flushExport();
    }

    private int flushExport() {
        try {
            connections.call(client -> {
                client.flush();
                return null;
            });
            return 0;
        } catch (IOException e) {
            return failed("flush", 0, 0, e);
        }
    }

    @Override
    public int release(String path, FileInfo fi) {
        return 0;
    }

    @Override
    public int truncate(String path, long newSize, FileInfo fi) {
        // losetup and mkfs open the file with O_TRUNC-free modes; a resize request is refused.
        return newSize == size ? 0 : -errno.einval();
    }

    @Override
    public int statfs(String path, Statvfs statvfs) {
        statvfs.setBsize(4096);
        statvfs.setFrsize(4096);
        statvfs.setBlocks(size / 4096);
        statvfs.setNameMax(255);
        return 0;
    }

    private int failed(String what, long offset, long length, IOException e) {
        log.warn("volume={} {} at {}+{} failed: {}", volumeId, what, offset, length, e.getMessage());
        if (e instanceof NbdCommandException command) {
            return switch (command.error()) {
                case ENOSPC -> -NbdError.ENOSPC.code();
                case EPERM -> -errno.erofs();
                default -> -errno.eio();
            };
        }
        return -errno.eio();
    }
}
