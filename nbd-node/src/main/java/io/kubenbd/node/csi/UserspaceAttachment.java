package io.kubenbd.node.csi;

import org.cryptomator.jfuse.api.Fuse;
import org.cryptomator.jfuse.api.FuseBuilder;
import org.cryptomator.jfuse.api.FuseMountFailedException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeoutException;

/**
 * The userspace attach path: the export as the file {@code <fuseDir>/disk} (FUSE), and that file
 * as a block device (a loop device with direct I/O, about twice as fast as through the page
 * cache). Torn down in the only safe order: the caller unmounts first, then the loop device is
 * detached, then FUSE is closed, since closing FUSE under an attached loop device turns all of
 * its I/O into EIO.
 */
final class UserspaceAttachment implements Attachment {
    private static final Logger log = LoggerFactory.getLogger(UserspaceAttachment.class);

    private final String volumeId;
    private final ExportConnections connections;
    private final ExportFileSystem fileSystem;
    private final Fuse fuse;
    private final Path fuseDir;
    private final Path device;

    private UserspaceAttachment(String volumeId, ExportConnections connections, ExportFileSystem fileSystem, Fuse fuse,
                                Path fuseDir, Path device) {
        this.volumeId = volumeId;
        this.connections = connections;
        this.fileSystem = fileSystem;
        this.fuse = fuse;
        this.fuseDir = fuseDir;
        this.device = device;
    }

    /** Takes ownership of {@code connections}: they are closed with the attachment, or now if attaching fails. */
    static UserspaceAttachment attach(String volumeId, ExportConnections connections, Path fuseDir, boolean readOnly,
                                      String fuseLibrary) throws IOException {
        Fuse fuse = null;
        try {
            if (Mounter.isMountPoint(fuseDir)) {
                // Left by an earlier run of the plugin whose FUSE daemon died with it (any access gives ENOTCONN).
                SystemCommand.run("umount", "-l", fuseDir.toString());
            }
            Files.createDirectories(fuseDir);
            FuseBuilder builder = Fuse.builder();
            builder.setLibraryPath(fuseLibrary);
            ExportFileSystem fileSystem = new ExportFileSystem(volumeId, connections, builder.errno(), readOnly);
            fuse = builder.build(fileSystem);
            fuse.mount("kube-nbd", fuseDir, "-o", "fsname=kube-nbd:" + volumeId.replace(',', '_'));
            Path file = fuseDir.resolve(ExportFileSystem.FILE);
            String loop = readOnly
                    ? SystemCommand.check("losetup", "--find", "--show", "--direct-io=on", "--read-only", file.toString())
                    : SystemCommand.check("losetup", "--find", "--show", "--direct-io=on", file.toString());
            log.info("volume={} attached as {} through FUSE ({} bytes)", volumeId, loop, fileSystem.size());
            return new UserspaceAttachment(volumeId, connections, fileSystem, fuse, fuseDir, Path.of(loop.strip()));
        } catch (FuseMountFailedException | UnsatisfiedLinkError e) {
            closeFuse(fuse);
            connections.close();
            throw new IOException("cannot mount FUSE at " + fuseDir + " (libfuse3 at " + fuseLibrary + "): " + e.getMessage(), e);
        } catch (IOException | RuntimeException e) {
            closeFuse(fuse);
            connections.close();
            throw e;
        }
    }

    /**
     * Lets go of what a crashed earlier run left for this volume: the loop device still attached
     * to the file on its dead FUSE mount, and that mount.
     */
    static void releaseStale(Path device, Path fuseDir) throws IOException {
        if (device != null) {
            Path backingFile = Path.of("/sys/block", device.getFileName().toString(), "loop", "backing_file");
            if (Files.exists(backingFile) && Files.readString(backingFile).strip().startsWith(fuseDir.toString())) {
                SystemCommand.run("losetup", "-d", device.toString());
            }
        }
        if (Mounter.isMountPoint(fuseDir)) {
            SystemCommand.run("umount", "-l", fuseDir.toString());
        }
    }

    @Override
    public Path device() {
        return device;
    }

    @Override
    public long size() {
        return fileSystem.size();
    }

    @Override
    public String failure() {
        return connections.lastFailure();
    }

    /** Picks up a larger export: the server's new size, then the loop device's capacity. */
    @Override
    public long expand() throws IOException {
        long size = connections.refreshSize();
        fileSystem.resize(size);
        SystemCommand.check("losetup", "--set-capacity", device.toString());
        return size;
    }

    @Override
    public void close() throws IOException {
        try {
            SystemCommand.check("losetup", "-d", device.toString());
            awaitDetached();
        } finally {
            closeFuse(fuse);
            if (Mounter.isMountPoint(fuseDir)) {
                // FUSE could not unmount (still busy): detach it lazily rather than leave a dead mount.
                SystemCommand.run("umount", "-l", fuseDir.toString());
            }
            connections.close();
            log.info("volume={} detached {} and unmounted FUSE at {}", volumeId, device, fuseDir);
        }
    }

    /**
     * losetup -d only marks the device for release; it lets go of the file on FUSE a moment
     * later. FUSE must not stop before that, or the unmount finds the file busy.
     */
    private void awaitDetached() throws IOException {
        Path backingFile = Path.of("/sys/block", device.getFileName().toString(), "loop", "backing_file");
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(10);
        while (Files.exists(backingFile) && System.nanoTime() < deadline) {
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted waiting for " + device + " to detach", e);
            }
        }
        if (Files.exists(backingFile)) {
            log.warn("volume={} {} still holds its file after 10 s", volumeId, device);
        }
    }

    private static void closeFuse(Fuse fuse) {
        if (fuse == null) {
            return;
        }
        try {
            fuse.close();
        } catch (TimeoutException e) {
            log.warn("FUSE did not stop in time: {}", e.getMessage());
        }
    }
}
