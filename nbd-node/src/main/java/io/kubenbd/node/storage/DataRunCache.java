package io.kubenbd.node.storage;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * The last run of a file known to be data, so that reads and block status inside it need no
 * lseek. On tmpfs SEEK_HOLE walks every page up to the next hole, which on a fully written
 * image costs milliseconds per call; qemu keeps the same kind of cache for the same reason.
 *
 * <p>Writes only turn holes into data, so they never make a cached run wrong. Anything that
 * can turn data into holes (punching, zero ranges, fallocate) calls {@link #invalidate}
 * after it changed the file; a lookup that raced with it stores its answer only if no
 * invalidation happened meanwhile.
 */
final class DataRunCache {
    private record Run(long start, long end) {}

    private final AtomicReference<Run> run = new AtomicReference<>();
    private final AtomicLong generation = new AtomicLong();

    /** The end of the cached data run containing {@code position}, or -1. */
    long dataEndAt(long position) {
        Run r = run.get();
        return r != null && r.start() <= position && position < r.end() ? r.end() : -1;
    }

    /** A token to pass to {@link #remember}, taken before the lseek that finds a run. */
    long generation() {
        return generation.get();
    }

    void remember(long token, long start, long end) {
        if (generation.get() == token) {
            run.set(new Run(start, end));
        }
    }

    void invalidate() {
        generation.incrementAndGet();
        run.set(null);
    }
}
