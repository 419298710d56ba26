package io.kubenbd.node.tls;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileTime;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * Something parsed from files, parsed again when any of them changes. Kubernetes updates a
 * Secret volume by swapping a symlink, so a change is a new modification time, size or
 * file key (inode) of the file the path resolves to. {@link #current()} checks at most once
 * per {@code checkIntervalNanos}; if the new contents do not parse, the old value stays and
 * the failure is reported once.
 */
public final class ReloadingFile<T> {

    /** Parses the value from the files. */
    public interface Loader<T> {
        T load() throws IOException;
    }

    private record Stamp(FileTime modified, long size, Object fileKey) {}

    private final List<Path> files;
    private final Loader<T> loader;
    private final Consumer<String> onReload;
    private final long checkIntervalNanos;
    private T value;
    private List<Stamp> stamps;
    private long lastCheck;

    /**
     * Loads the value now; a failure here is the caller's (bad configuration at start-up).
     *
     * @param onReload told, in one line, about each reload and each failed reload
     */
    public ReloadingFile(List<Path> files, Loader<T> loader, long checkIntervalNanos, Consumer<String> onReload)
            throws IOException {
        this.files = List.copyOf(files);
        this.loader = loader;
        this.onReload = onReload;
        this.checkIntervalNanos = checkIntervalNanos;
        this.stamps = stamps();
        this.value = loader.load();
        this.lastCheck = System.nanoTime();
    }

    /** The value for a new TLS handshake: reloaded first if the files changed. */
    public synchronized T current() {
        long now = System.nanoTime();
        if (now - lastCheck < checkIntervalNanos) {
            return value;
        }
        lastCheck = now;
        try {
            List<Stamp> seen = stamps();
            if (!seen.equals(stamps)) {
                stamps = seen;
                value = loader.load();
                onReload.accept("reloaded " + files);
            }
        } catch (IOException | RuntimeException e) {
            onReload.accept("reloading " + files + " failed, keeping the previous material: " + e.getMessage());
        }
        return value;
    }

    private List<Stamp> stamps() throws IOException {
        List<Stamp> result = new java.util.ArrayList<>(files.size());
        for (Path file : files) {
            BasicFileAttributes a = Files.readAttributes(file, BasicFileAttributes.class);
            result.add(new Stamp(a.lastModifiedTime(), a.size(), Objects.requireNonNullElse(a.fileKey(), "")));
        }
        return result;
    }
}
