package io.kubenbd.node.storage;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;
import java.util.regex.Pattern;

/**
 * The named dirty bitmaps of one export, kept on disk next to the data so that incremental
 * backups survive restarts. Every connection to an export shares one set.
 *
 * <h2>Semantics</h2>
 * Each bitmap has a granularity (a power of two, {@value #MIN_GRANULARITY} B ..
 * 64 MiB, default {@value #DEFAULT_GRANULARITY} B) and one bit per granule. {@link #markDirty}
 * (called for every WRITE, TRIM and WRITE_ZEROES once it has changed the data and before its
 * reply is sent, so that a write under way during a {@link #checkpoint} lands in the bitmap
 * that goes on recording) sets the bits of
 * every granule the range touches in every {@link DirtyBitmapState#RECORDING} bitmap; it is
 * lock-free and allocates nothing. A backup reads {@link #runs} (NBD block status context
 * {@code qemu:dirty-bitmap:NAME}, flag bit 0 = dirty), copies the dirty runs, then calls
 * {@link #clear} &mdash; or, to lose no write made during the copy, {@link #checkpoint}s first
 * and reads the frozen bitmap while the new one records.
 *
 * <p>Names match {@value #NAME_PATTERN} (so they are safe file names and never start with a
 * dot). Methods taking a name of a bitmap that does not exist throw
 * {@link IllegalArgumentException}; using an {@link DirtyBitmapState#INCONSISTENT} bitmap for
 * anything but {@link #clear}, {@link #remove} or {@link #info} throws
 * {@link IllegalStateException} whose message says why and how to recover. After
 * {@link #close} management methods throw {@link IllegalStateException} and
 * {@link #markDirty} does nothing.
 *
 * <h2>Files</h2>
 * The bitmaps of the export at {@code /x/disk.img} live in the directory
 * {@code /x/disk.img.bitmaps/}, created by {@link #open} when absent: one file
 * {@code NAME.bitmap} per bitmap, and {@code .lock}, held with an exclusive
 * {@link FileLock} while a set is open so that two servers never share the bitmaps (the kernel
 * releases it when a process dies). Files are replaced atomically: a temporary
 * {@code .NAME.bitmap.tmp} is written and fsynced, renamed over {@code NAME.bitmap}, and the
 * directory is fsynced; stale temporary files are deleted by {@link #open}. Other files are ignored.
 *
 * <p>File layout (version 1; integers big-endian, offsets in bytes, N = name length,
 * W = ceil(ceil(export size / granularity) / 64)):
 * <table>
 * <caption>bitmap file</caption>
 * <tr><th>offset</th><th>size</th><th>field</th></tr>
 * <tr><td>0</td><td>8</td><td>magic, ASCII {@code KNBDBMP1}</td></tr>
 * <tr><td>8</td><td>4</td><td>format version, 1</td></tr>
 * <tr><td>12</td><td>4</td><td>flags: bit 0 IN_USE (a server has it open and is recording into
 *     it, so the bits on disk may be stale), bit 1 FROZEN; other bits 0</td></tr>
 * <tr><td>16</td><td>8</td><td>granularity in bytes</td></tr>
 * <tr><td>24</td><td>8</td><td>export size in bytes when written</td></tr>
 * <tr><td>32</td><td>8</td><td>creation sequence number (orders {@link #list})</td></tr>
 * <tr><td>40</td><td>2</td><td>N, 1..128</td></tr>
 * <tr><td>42</td><td>N</td><td>name, ASCII, equal to the file name without {@code .bitmap}</td></tr>
 * <tr><td>42+N</td><td>8&times;W</td><td>bits as 64-bit words: granule g is bit (g mod 64) (bit 0 =
 *     least significant) of word g div 64; bits past the last granule are 0</td></tr>
 * <tr><td>42+N+8W</td><td>4</td><td>CRC-32C (as {@link java.util.zip.CRC32C}) of all bytes before it</td></tr>
 * </table>
 *
 * <h2>Crash safety</h2>
 * {@link #open} rewrites every recording bitmap's file with IN_USE set before it returns (so
 * before any write is served), as does {@link #add}, {@link #clear} and {@link #checkpoint}
 * for the recording bitmaps they make. {@link #close} stops recording and rewrites them without
 * IN_USE. A frozen bitmap no longer changes, so it is written without IN_USE whenever its
 * contents change (checkpoint, merge, clear) and survives a crash. When {@link #open} finds a
 * file with IN_USE set (the server died, e.g. kill -9), a bad checksum, a truncated or otherwise
 * malformed file, or an export size other than the current one, that bitmap is
 * {@link DirtyBitmapState#INCONSISTENT}: listed with the reason, never offered through
 * {@link #runs}, left unchanged on disk until {@link #clear} (which makes it an empty recording
 * bitmap sized for the export) or {@link #remove}.
 */
public final class DirtyBitmapSet implements AutoCloseable {
    public static final long MIN_GRANULARITY = 512;
    public static final long MAX_GRANULARITY = 64L << 20;
    public static final long DEFAULT_GRANULARITY = 64L << 10;
    /** Bitmaps one export may have at once. */
    public static final int MAX_BITMAPS = 32;
    /** Bytes of bits all bitmaps of one export may take together (they live on the heap). */
    public static final long MAX_BITMAP_BYTES = 64L << 20;
    public static final String NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}";
    static final String LOCK_FILE = ".lock";

    private static final Pattern NAME = Pattern.compile(NAME_PATTERN);
    private static final DirtyBitmap[] NONE = new DirtyBitmap[0];

    /**
     * The bitmaps markDirty writes to, and how many markDirty calls are using this generation.
     * Replacing it and then waiting for the old count to drop to zero means no call still
     * writes to a bitmap that left the generation (a frozen, removed or closed one).
     */
    private record Recording(DirtyBitmap[] bitmaps, AtomicLong inFlight) {
        Recording(DirtyBitmap[] bitmaps) {
            this(bitmaps, new AtomicLong());
        }
    }

    private final Path directory;
    private final long exportSize;
    private final FileChannel lockChannel;
    private final ReentrantLock lock = new ReentrantLock();
    /** Guarded by {@link #lock}; in creation order. */
    private final Map<String, DirtyBitmap> bitmaps = new LinkedHashMap<>();
    private long nextSequence;
    private boolean closed;
    private volatile Recording recording = new Recording(NONE);

    private DirtyBitmapSet(Path directory, long exportSize, FileChannel lockChannel) {
        this.directory = directory;
        this.exportSize = exportSize;
        this.lockChannel = lockChannel;
    }

    /** The directory holding the bitmaps of the export at {@code dataPath}: {@code <dataPath>.bitmaps}. */
    public static Path directoryFor(Path dataPath) {
        Path absolute = dataPath.toAbsolutePath();
        return absolute.resolveSibling(absolute.getFileName() + ".bitmaps");
    }

    /**
     * Opens (creating if absent) the bitmaps persisted next to the data, in the directory
     * {@code <dataPath>.bitmaps/}. Recording bitmaps are marked IN_USE on disk before this returns.
     *
     * @throws IOException also when another set (in this or another process) has the directory open
     */
    public static DirtyBitmapSet open(Path dataPath, long exportSize) throws IOException {
        if (exportSize < 0) {
            throw new IllegalArgumentException("export size must not be negative: " + exportSize);
        }
        Path directory = directoryFor(dataPath);
        Files.createDirectories(directory);
        FileChannel lockChannel = FileChannel.open(directory.resolve(LOCK_FILE), StandardOpenOption.CREATE,
                StandardOpenOption.WRITE);
        try {
            FileLock fileLock;
            try {
                fileLock = lockChannel.tryLock();
            } catch (OverlappingFileLockException e) {
                fileLock = null;
            }
            if (fileLock == null) {
                throw new IOException("dirty bitmaps in " + directory + " are already open (another server or export?)");
            }
            DirtyBitmapSet set = new DirtyBitmapSet(directory, exportSize, lockChannel);
            set.load();
            return set;
        } catch (IOException | RuntimeException | Error e) {
            lockChannel.close();
            throw e;
        }
    }

    private void load() throws IOException {
        List<DirtyBitmap> found = new ArrayList<>();
        try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
            for (Path entry : entries) {
                String file = entry.getFileName().toString();
                if (file.startsWith(".") && file.endsWith(DirtyBitmapFile.SUFFIX + DirtyBitmapFile.TEMP_SUFFIX)) {
                    Files.deleteIfExists(entry); // left by a crash mid-write; the bitmap file itself is intact
                } else if (file.endsWith(DirtyBitmapFile.SUFFIX) && Files.isRegularFile(entry)) {
                    String name = file.substring(0, file.length() - DirtyBitmapFile.SUFFIX.length());
                    if (NAME.matcher(name).matches()) {
                        found.add(DirtyBitmapFile.read(entry, name, exportSize));
                    }
                }
            }
        }
        found.sort(Comparator.comparingLong((DirtyBitmap b) -> b.sequence).thenComparing(b -> b.name));
        for (DirtyBitmap bitmap : found) {
            bitmaps.put(bitmap.name, bitmap);
            if (bitmap.sequence != Long.MAX_VALUE) {
                nextSequence = Math.max(nextSequence, bitmap.sequence + 1);
            }
        }
        for (DirtyBitmap bitmap : found) {
            if (bitmap.state() == DirtyBitmapState.RECORDING) {
                persist(bitmap); // IN_USE on disk before any write is served
            }
        }
        recording = new Recording(recordingBitmaps());
    }

    static boolean validGranularity(long granularity) {
        return granularity >= MIN_GRANULARITY && granularity <= MAX_GRANULARITY && Long.bitCount(granularity) == 1;
    }

    public long exportSize() {
        return exportSize;
    }

    /** Every bitmap, in creation order. */
    public List<DirtyBitmapInfo> list() {
        lock.lock();
        try {
            List<DirtyBitmapInfo> infos = new ArrayList<>(bitmaps.size());
            for (DirtyBitmap bitmap : bitmaps.values()) {
                infos.add(bitmap.info());
            }
            return infos;
        } finally {
            lock.unlock();
        }
    }

    public Optional<DirtyBitmapInfo> info(String name) {
        lock.lock();
        try {
            return Optional.ofNullable(bitmaps.get(name)).map(DirtyBitmap::info);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Creates an empty recording bitmap, persisted (IN_USE) before it starts recording.
     *
     * @throws IllegalArgumentException the name does not match {@value #NAME_PATTERN} or is
     *     taken, or the granularity is not a power of two in 512 B .. 64 MiB
     * @throws DirtyBitmapLimitException the export has {@link #MAX_BITMAPS} bitmaps, or this one
     *     would take their bits past {@link #MAX_BITMAP_BYTES}
     */
    public DirtyBitmapInfo add(String name, long granularity) throws IOException {
        lock.lock();
        try {
            checkOpen();
            DirtyBitmap bitmap = create(name, granularity);
            persist(bitmap);
            bitmaps.put(name, bitmap);
            publish();
            return bitmap.info();
        } finally {
            lock.unlock();
        }
    }

    private DirtyBitmap create(String name, long granularity) {
        Objects.requireNonNull(name, "name");
        if (!NAME.matcher(name).matches()) {
            throw new IllegalArgumentException("invalid bitmap name '" + name + "': it must match " + NAME_PATTERN);
        }
        if (bitmaps.containsKey(name)) {
            throw new IllegalArgumentException("a dirty bitmap named '" + name + "' already exists");
        }
        if (!validGranularity(granularity)) {
            throw new IllegalArgumentException("invalid granularity " + granularity
                    + ": it must be a power of two from 512 B to 64 MiB");
        }
        long bytes = DirtyBitmap.wordCount(exportSize, granularity) * 8L; // throws when too fine for the export
        checkRoomFor(name, granularity, bytes);
        return new DirtyBitmap(name, granularity, exportSize, nextSequence++, DirtyBitmapState.RECORDING);
    }

    /**
     * Bitmaps live on the heap, and a control API caller must not be able to exhaust it: at most
     * {@link #MAX_BITMAPS} per export, together at most {@link #MAX_BITMAP_BYTES} of bits.
     */
    private void checkRoomFor(String name, long granularity, long bytes) {
        if (bitmaps.size() >= MAX_BITMAPS) {
            throw new DirtyBitmapLimitException("export already has " + bitmaps.size()
                    + " dirty bitmaps, the most allowed: remove one first");
        }
        long inUse = 0;
        for (DirtyBitmap bitmap : bitmaps.values()) {
            inUse += bitmap.wordCount() * 8L;
        }
        if (inUse + bytes > MAX_BITMAP_BYTES) {
            throw new DirtyBitmapLimitException("dirty bitmap '" + name + "' (granularity " + granularity + ") would need "
                    + mib(bytes) + " MiB for this export's " + exportSize + " bytes, more than the "
                    + mib(MAX_BITMAP_BYTES) + " MiB all its bitmaps may use (" + mib(inUse)
                    + " MiB in use): choose a coarser granularity");
        }
    }

    private static long mib(long bytes) {
        return (bytes + (1L << 20) - 1) >> 20;
    }

    /** Stops recording into the bitmap and deletes its file. */
    public void remove(String name) throws IOException {
        lock.lock();
        try {
            checkOpen();
            require(name);
            bitmaps.remove(name);
            publish();
            Files.deleteIfExists(DirtyBitmapFile.fileOf(directory, name));
            DirtyBitmapFile.fsyncDirectory(directory);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Empties the bitmap. A recording or frozen bitmap keeps its state; an inconsistent one
     * becomes an empty recording bitmap with the export's current size (its granularity is kept
     * when its file told it). Writes racing with the clear may or may not stay marked.
     */
    public void clear(String name) throws IOException {
        lock.lock();
        try {
            checkOpen();
            DirtyBitmap bitmap = require(name);
            bitmap.clearBits();
            if (bitmap.state() == DirtyBitmapState.INCONSISTENT) {
                String reason = bitmap.reason();
                bitmap.recording();
                try {
                    persist(bitmap);
                } catch (IOException | RuntimeException e) {
                    bitmap.inconsistent(reason);
                    throw e;
                }
                publish();
            } else {
                persist(bitmap);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Atomically: {@code freeze} stops recording (FROZEN) and {@code start} is created RECORDING,
     * so no write falls between them: every {@link #markDirty} lands in one of them, those
     * that returned before this call in {@code freeze} or {@code start}, those that start after
     * it in {@code start} only, and {@code freeze} no longer changes once this returns. The new
     * bitmap is persisted (IN_USE) before the switch and the frozen one (without IN_USE) after it.
     *
     * @throws IllegalArgumentException {@code freeze} does not exist, or {@code start} is not a
     *     valid new name, or the granularity is invalid
     * @throws IllegalStateException    {@code freeze} is not recording
     */
    public DirtyBitmapInfo checkpoint(String freeze, String start, long granularity) throws IOException {
        lock.lock();
        try {
            checkOpen();
            DirtyBitmap old = require(freeze);
            if (old.state() != DirtyBitmapState.RECORDING) {
                throw new IllegalStateException(stateProblem(old, "checkpoint"));
            }
            DirtyBitmap next = create(start, granularity);
            persist(next);
            bitmaps.put(start, next);
            old.frozen();
            publish(); // waits for markDirty calls still writing to the frozen bitmap
            persist(old);
            return next.info();
        } finally {
            lock.unlock();
        }
    }

    /**
     * {@code target |= source} for each source. Granularities may differ: a dirty source
     * granule marks every target granule it overlaps. The target may be recording or frozen
     * and is persisted afterwards.
     *
     * @throws IllegalArgumentException a bitmap does not exist
     * @throws IllegalStateException    a bitmap is inconsistent
     */
    public void merge(String target, List<String> sources) throws IOException {
        lock.lock();
        try {
            checkOpen();
            DirtyBitmap into = require(target);
            if (into.state() == DirtyBitmapState.INCONSISTENT) {
                throw new IllegalStateException(stateProblem(into, "merge into"));
            }
            List<DirtyBitmap> from = new ArrayList<>(sources.size());
            for (String source : sources) {
                DirtyBitmap bitmap = require(source);
                if (bitmap.state() == DirtyBitmapState.INCONSISTENT) {
                    throw new IllegalStateException(stateProblem(bitmap, "merge from"));
                }
                from.add(bitmap);
            }
            for (DirtyBitmap source : from) {
                long limit = source.granules;
                long g = source.next(0, limit, true);
                while (g < limit) {
                    long end = source.next(g + 1, limit, false);
                    into.mark(source.byteOffset(g), source.byteOffset(end));
                    g = source.next(end, limit, true);
                }
            }
            persist(into);
        } finally {
            lock.unlock();
        }
    }

    /**
     * Marks every granule overlapping {@code [offset, offset + length)} (clipped at the export
     * end) in every recording bitmap. Safe from any number of threads; lock-free, no allocation.
     */
    public void markDirty(long offset, long length) {
        if (offset < 0 || length < 0) {
            throw new IllegalArgumentException("bad range: offset " + offset + ", length " + length);
        }
        if (length == 0 || offset >= exportSize) {
            return;
        }
        long end = length > exportSize - offset ? exportSize : offset + length;
        Recording r = enter();
        if (r == null) {
            return;
        }
        try {
            for (DirtyBitmap bitmap : r.bitmaps) {
                bitmap.mark(offset, end);
            }
        } finally {
            r.inFlight.decrementAndGet();
        }
    }

    /**
     * The current generation, counted as in use by the caller (who must decrement its count),
     * or null when nothing records.
     */
    private Recording enter() {
        while (true) {
            Recording r = recording;
            if (r.bitmaps.length == 0) {
                return null;
            }
            r.inFlight.incrementAndGet();
            // Dekker-style: either switchTo() sees our count, or we see its new generation and retry.
            if (recording == r) {
                return r;
            }
            r.inFlight.decrementAndGet();
        }
    }

    /**
     * For tests: a {@link #markDirty} call paused after it chose the bitmaps to write to;
     * running the result finishes it.
     */
    Runnable pausedMarkDirty(long offset, long end) {
        Recording r = enter();
        if (r == null) {
            return () -> {};
        }
        return () -> {
            try {
                for (DirtyBitmap bitmap : r.bitmaps) {
                    bitmap.mark(offset, end);
                }
            } finally {
                r.inFlight.decrementAndGet();
            }
        };
    }

    /**
     * Runs of equal dirty state covering {@code [offset, offset + length)} from {@code offset},
     * at most {@code max} of them, never past the export end (an empty list when the range is
     * empty there). A dirty granule makes its whole granule dirty, clipped to the range.
     *
     * @throws IllegalArgumentException the bitmap does not exist, or a bad range or max
     * @throws IllegalStateException    the bitmap is inconsistent (the message says why and how to recover)
     */
    public List<DirtyRun> runs(String name, long offset, long length, int max) {
        if (offset < 0 || length < 0 || offset > exportSize || max <= 0) {
            throw new IllegalArgumentException("bad request: offset " + offset + ", length " + length + ", max " + max
                    + " (export size " + exportSize + ")");
        }
        DirtyBitmap bitmap;
        lock.lock();
        try {
            checkOpen();
            bitmap = require(name);
        } finally {
            lock.unlock();
        }
        if (bitmap.state() == DirtyBitmapState.INCONSISTENT) {
            throw new IllegalStateException(stateProblem(bitmap, "read"));
        }
        long end = length > exportSize - offset ? exportSize : offset + length;
        List<DirtyRun> runs = new ArrayList<>();
        if (offset == end) {
            return runs;
        }
        long limit = ((end - 1) >>> bitmap.shift) + 1;
        long pos = offset;
        while (pos < end && runs.size() < max) {
            long granule = pos >>> bitmap.shift;
            boolean dirty = bitmap.isSet(granule);
            long next = bitmap.next(granule + 1, limit, !dirty);
            long runEnd = Math.min(end, bitmap.byteOffset(next));
            runs.add(new DirtyRun(runEnd - pos, dirty));
            pos = runEnd;
        }
        return runs;
    }

    /** Persists the current contents of every consistent bitmap (recording ones stay IN_USE). */
    public void flush() throws IOException {
        lock.lock();
        try {
            checkOpen();
            for (DirtyBitmap bitmap : bitmaps.values()) {
                if (bitmap.state() != DirtyBitmapState.INCONSISTENT) {
                    persist(bitmap);
                }
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Stops recording, persists every consistent bitmap without IN_USE, and releases the
     * directory. Inconsistent bitmaps are left as they are on disk. Idempotent.
     */
    @Override
    public void close() throws IOException {
        lock.lock();
        try {
            if (closed) {
                return;
            }
            closed = true;
            switchTo(new Recording(NONE));
            IOException failure = null;
            for (DirtyBitmap bitmap : bitmaps.values()) {
                if (bitmap.state() == DirtyBitmapState.INCONSISTENT) {
                    continue;
                }
                try {
                    DirtyBitmapFile.write(directory, bitmap, flagsOf(bitmap, false));
                } catch (IOException e) {
                    if (failure == null) {
                        failure = e;
                    } else {
                        failure.addSuppressed(e);
                    }
                }
            }
            try {
                lockChannel.close();
            } catch (IOException e) {
                if (failure == null) {
                    failure = e;
                } else {
                    failure.addSuppressed(e);
                }
            }
            if (failure != null) {
                throw failure;
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * For tests: what a killed server leaves behind. Recording stops and the directory lock is
     * released, but nothing is written, so the files keep whatever flags they had.
     */
    void abandonWithoutClosing() throws IOException {
        lock.lock();
        try {
            closed = true;
            switchTo(new Recording(NONE));
            lockChannel.close();
        } finally {
            lock.unlock();
        }
    }

    private void persist(DirtyBitmap bitmap) throws IOException {
        DirtyBitmapFile.write(directory, bitmap, flagsOf(bitmap, true));
    }

    private static int flagsOf(DirtyBitmap bitmap, boolean open) {
        return switch (bitmap.state()) {
            case RECORDING -> open ? DirtyBitmapFile.FLAG_IN_USE : 0;
            case FROZEN -> DirtyBitmapFile.FLAG_FROZEN;
            case INCONSISTENT -> throw new IllegalStateException("inconsistent bitmaps are never written");
        };
    }

    private DirtyBitmap[] recordingBitmaps() {
        return bitmaps.values().stream().filter(b -> b.state() == DirtyBitmapState.RECORDING)
                .toArray(DirtyBitmap[]::new);
    }

    /** Makes markDirty write to exactly the recording bitmaps; returns when no call writes elsewhere. */
    private void publish() {
        switchTo(new Recording(recordingBitmaps()));
    }

    private void switchTo(Recording next) {
        Recording old = recording;
        recording = next;
        for (int spins = 0; old.inFlight.get() != 0; spins++) {
            if (spins < 1000) {
                Thread.onSpinWait();
            } else {
                Thread.yield(); // a marking thread was descheduled mid-call
            }
        }
    }

    private DirtyBitmap require(String name) {
        DirtyBitmap bitmap = bitmaps.get(name);
        if (bitmap == null) {
            throw new IllegalArgumentException("no dirty bitmap named '" + name + "'");
        }
        return bitmap;
    }

    private static String stateProblem(DirtyBitmap bitmap, String action) {
        if (bitmap.state() == DirtyBitmapState.INCONSISTENT) {
            return "cannot " + action + " dirty bitmap '" + bitmap.name + "': it is inconsistent: " + bitmap.reason();
        }
        return "cannot " + action + " dirty bitmap '" + bitmap.name + "': it is " + bitmap.state();
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("dirty bitmap set " + directory + " is closed");
        }
    }
}
