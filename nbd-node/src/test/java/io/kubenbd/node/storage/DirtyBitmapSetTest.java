package io.kubenbd.node.storage;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class DirtyBitmapSetTest {
    private static final long KIB = 1024;
    private static final long MIB = 1024 * KIB;

    @TempDir
    Path dir;

    private Path data() {
        return dir.resolve("disk.img");
    }

    private Path bitmapDir() {
        return dir.resolve("disk.img.bitmaps");
    }

    private DirtyBitmapSet open(long size) throws IOException {
        return DirtyBitmapSet.open(data(), size);
    }

    private static DirtyRun clean(long length) {
        return new DirtyRun(length, false);
    }

    private static DirtyRun dirty(long length) {
        return new DirtyRun(length, true);
    }

    private static int flagsOnDisk(Path file) throws IOException {
        return ByteBuffer.wrap(Files.readAllBytes(file)).getInt(12);
    }

    @Test
    void addsListsRemovesAndClearsInCreationOrder() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            assertThat(set.list()).isEmpty();
            assertThat(bitmapDir()).isDirectory();
            DirtyBitmapInfo b = set.add("b", 4096);
            assertThat(b).isEqualTo(new DirtyBitmapInfo("b", 4096, DirtyBitmapState.RECORDING, 0, ""));
            set.add("a", DirtyBitmapSet.DEFAULT_GRANULARITY);
            set.add("c", 512);
            assertThat(set.list()).extracting(DirtyBitmapInfo::name).containsExactly("b", "a", "c");
            assertThat(bitmapDir().resolve("a.bitmap")).isRegularFile();

            set.markDirty(100, 1);
            assertThat(set.info("b").orElseThrow().dirtyBytes()).isEqualTo(4096);
            assertThat(set.info("a").orElseThrow().dirtyBytes()).isEqualTo(64 * KIB);
            assertThat(set.info("c").orElseThrow().dirtyBytes()).isEqualTo(512);

            set.clear("b");
            assertThat(set.info("b").orElseThrow().dirtyBytes()).isZero();
            assertThat(set.info("a").orElseThrow().dirtyBytes()).isEqualTo(64 * KIB);
            set.markDirty(8192, 1);
            assertThat(set.info("b").orElseThrow().dirtyBytes()).isEqualTo(4096); // still recording after clear

            set.remove("a");
            assertThat(set.list()).extracting(DirtyBitmapInfo::name).containsExactly("b", "c");
            assertThat(set.info("a")).isEmpty();
            assertThat(bitmapDir().resolve("a.bitmap")).doesNotExist();
            assertThatThrownBy(() -> set.remove("a")).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("no dirty bitmap named 'a'");
            assertThatThrownBy(() -> set.clear("zz")).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> set.runs("zz", 0, 1, 1)).isInstanceOf(IllegalArgumentException.class);

            set.add("a", 4096); // the name is free again, and goes last
            assertThat(set.list()).extracting(DirtyBitmapInfo::name).containsExactly("b", "c", "a");
        }
    }

    @Test
    void rejectsBadGranularities() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            for (long bad : new long[] {0, -512, 1, 256, 511, 513, 3000, 96 * KIB, 128 * MIB, Long.MIN_VALUE}) {
                assertThatThrownBy(() -> set.add("x", bad)).as("granularity %d", bad)
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("granularity");
            }
            assertThat(set.list()).isEmpty();
            assertThat(set.add("min", 512).granularity()).isEqualTo(512);
            assertThat(set.add("max", 64 * MIB).granularity()).isEqualTo(64 * MIB);
            assertThatThrownBy(() -> set.checkpoint("min", "next", 1000)).isInstanceOf(IllegalArgumentException.class);
            assertThat(set.info("min").orElseThrow().state()).isEqualTo(DirtyBitmapState.RECORDING);
        }
    }

    @Test
    void rejectsBadAndDuplicateNames() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            String longest = "a" + "b".repeat(127);
            for (String bad : new String[] {"", ".hidden", "-x", "_x", "a/b", "a b", "ä", "..", longest + "c", "a\nb"}) {
                assertThatThrownBy(() -> set.add(bad, 4096)).as("name '%s'", bad)
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining(DirtyBitmapSet.NAME_PATTERN);
            }
            set.add("backup-1.inc_2", 4096);
            set.add(longest, 4096);
            set.add("B", 4096);
            set.add("b", 4096); // names are case-sensitive
            assertThatThrownBy(() -> set.add("b", 65536)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("already exists");
            assertThat(set.list()).hasSize(4);
            try (Stream<Path> files = Files.list(bitmapDir())) {
                assertThat(files.map(p -> p.getFileName().toString()))
                        .containsExactlyInAnyOrder(".lock", "backup-1.inc_2.bitmap", longest + ".bitmap", "B.bitmap",
                                "b.bitmap");
            }
        }
    }

    @Test
    void unalignedMarksDirtyWholeGranules() throws IOException {
        try (DirtyBitmapSet set = open(64 * KIB)) {
            set.add("g", 4096);
            set.markDirty(5000, 10); // inside granule 1
            set.markDirty(4 * 4096 - 1, 2); // straddles granules 3 and 4
            assertThat(set.runs("g", 0, 64 * KIB, 100)).containsExactly(
                    clean(4096), dirty(4096), clean(4096), dirty(2 * 4096), clean(64 * KIB - 5 * 4096));
            assertThat(set.info("g").orElseThrow().dirtyBytes()).isEqualTo(3 * 4096);
        }
    }

    @Test
    void runsHaveExactBoundariesRespectMaxAndStopAtTheExportEnd() throws IOException {
        long size = 10 * 4096 + 100; // the last granule is 100 bytes
        try (DirtyBitmapSet set = open(size)) {
            set.add("g", 4096);
            set.markDirty(0, 1);
            set.markDirty(2 * 4096, 2 * 4096);
            set.markDirty(size - 1, 1);
            set.markDirty(size, 4096); // past the end: ignored
            set.markDirty(size + 5000, 1);
            set.markDirty(100, 0); // empty: ignored

            assertThat(set.runs("g", 0, size, 100)).containsExactly(
                    dirty(4096), clean(4096), dirty(2 * 4096), clean(6 * 4096), dirty(100));
            assertThat(set.runs("g", 0, Long.MAX_VALUE, 100)).containsExactly(
                    dirty(4096), clean(4096), dirty(2 * 4096), clean(6 * 4096), dirty(100));
            assertThat(set.info("g").orElseThrow().dirtyBytes()).isEqualTo(3 * 4096 + 100);
            // max
            assertThat(set.runs("g", 0, size, 2)).containsExactly(dirty(4096), clean(4096));
            assertThat(set.runs("g", 0, size, 1)).containsExactly(dirty(4096));
            // clipped to the request, starting mid-granule
            assertThat(set.runs("g", 100, 3 * 4096, 100)).containsExactly(
                    dirty(4096 - 100), clean(4096), dirty(4096 + 100));
            assertThat(set.runs("g", 2 * 4096 + 1, 10, 100)).containsExactly(dirty(10));
            assertThat(set.runs("g", 5 * 4096, 4096, 100)).containsExactly(clean(4096));
            assertThat(set.runs("g", size - 50, 1000, 100)).containsExactly(dirty(50));
            assertThat(set.runs("g", size, 10, 100)).isEmpty();
            assertThat(set.runs("g", 10, 0, 100)).isEmpty();
            assertThatThrownBy(() -> set.runs("g", size + 1, 1, 1)).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> set.runs("g", 0, 1, 0)).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> set.runs("g", -1, 1, 1)).isInstanceOf(IllegalArgumentException.class);
        }
    }

    @Test
    void runsCrossWordBoundariesAndLongRuns() throws IOException {
        long size = 1000 * 512L;
        try (DirtyBitmapSet set = open(size)) {
            set.add("g", 512);
            set.markDirty(63 * 512, 2 * 512); // granules 63, 64
            set.markDirty(200 * 512, 500 * 512); // granules 200..699
            assertThat(set.runs("g", 0, size, 100)).containsExactly(
                    clean(63 * 512), dirty(2 * 512), clean(135 * 512), dirty(500 * 512), clean(300 * 512));
        }
    }

    @Test
    void concurrentMarksFromEightThreadsGiveTheExactUnion() throws Exception {
        long granularity = 4096;
        long granules = 20_000;
        long size = granules * granularity - 123;
        BitSet expected = new BitSet();
        List<long[]> ranges = new ArrayList<>();
        Random random = new Random(42);
        for (int t = 0; t < 8; t++) {
            List<long[]> mine = new ArrayList<>();
            // disjoint: thread t owns granules [t * 1000, t * 1000 + 1000) and marks every third one
            for (long g = t * 1000L; g < t * 1000L + 1000; g += 3) {
                mine.add(new long[] {g * granularity + 17, 1});
            }
            // overlapping: random ranges anywhere past the disjoint area, shared by all threads
            for (int i = 0; i < 2000; i++) {
                long offset = 8000 * granularity + (long) (random.nextDouble() * (size - 8000 * granularity));
                long length = 1 + random.nextInt(3 * (int) granularity);
                mine.add(new long[] {offset, length});
            }
            ranges.addAll(mine);
        }
        for (long[] r : ranges) {
            long end = Math.min(size, r[0] + r[1]);
            expected.set((int) (r[0] / granularity), (int) ((end - 1) / granularity) + 1);
        }

        try (DirtyBitmapSet set = open(size)) {
            set.add("fine", granularity);
            set.add("coarse", 64 * KIB);
            ExecutorService pool = Executors.newFixedThreadPool(8);
            try {
                CountDownLatch go = new CountDownLatch(1);
                List<Future<?>> futures = new ArrayList<>();
                int perThread = ranges.size() / 8;
                for (int t = 0; t < 8; t++) {
                    List<long[]> mine = ranges.subList(t * perThread, (t + 1) * perThread);
                    futures.add(pool.submit(() -> {
                        go.await();
                        for (int repeat = 0; repeat < 3; repeat++) {
                            for (long[] r : mine) {
                                set.markDirty(r[0], r[1]);
                            }
                        }
                        return null;
                    }));
                }
                go.countDown();
                for (Future<?> f : futures) {
                    f.get();
                }
            } finally {
                pool.shutdownNow();
            }
            assertThat(set.runs("fine", 0, size, Integer.MAX_VALUE)).isEqualTo(expectedRuns(expected, granularity, size));
            BitSet coarse = new BitSet();
            expected.stream().forEach(g -> coarse.set((int) (g * granularity / (64 * KIB))));
            assertThat(set.runs("coarse", 0, size, Integer.MAX_VALUE)).isEqualTo(expectedRuns(coarse, 64 * KIB, size));
        }
    }

    /** Runs computed the slow, obvious way. */
    private static List<DirtyRun> expectedRuns(BitSet dirtyGranules, long granularity, long size) {
        List<DirtyRun> runs = new ArrayList<>();
        long pos = 0;
        while (pos < size) {
            boolean d = dirtyGranules.get((int) (pos / granularity));
            long end = pos;
            while (end < size && dirtyGranules.get((int) (end / granularity)) == d) {
                end = Math.min(size, end + granularity);
            }
            runs.add(new DirtyRun(end - pos, d));
            pos = end;
        }
        return runs;
    }

    @Test
    void checkpointLosesNoWriteAndTheFrozenBitmapStopsChanging() throws Exception {
        long granularity = 512;
        int threads = 4;
        long perThread = 1_000_000; // far more than the markers reach before the checkpoint: they pace themselves
        long size = threads * perThread * granularity;
        try (DirtyBitmapSet set = open(size)) {
            set.add("before", granularity);
            AtomicLong[] completed = new AtomicLong[threads];
            AtomicBoolean checkpointed = new AtomicBoolean();
            AtomicBoolean stop = new AtomicBoolean();
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            List<Future<?>> futures = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                AtomicLong done = completed[t] = new AtomicLong(-1);
                long base = t * perThread;
                futures.add(pool.submit(() -> {
                    for (long i = 0; i < perThread && !stop.get(); i++) {
                        set.markDirty((base + i) * granularity + 7, 3);
                        done.set(i);
                        if (!checkpointed.get() && i > 2000 && i % 16 == 0) {
                            LockSupport.parkNanos(20_000); // bursts of marks while the checkpoint runs
                        }
                    }
                    return null;
                }));
            }
            try {
                while (minimum(completed) < 2000) {
                    Thread.onSpinWait();
                }
                set.checkpoint("before", "after", 4096);
                long[] doneAtCheckpoint = new long[threads];
                for (int t = 0; t < threads; t++) {
                    doneAtCheckpoint[t] = completed[t].get();
                }
                checkpointed.set(true);
                List<DirtyRun> frozenAtCheckpoint = set.runs("before", 0, size, Integer.MAX_VALUE);
                for (int t = 0; t < threads; t++) { // every thread marks plenty after the checkpoint
                    while (completed[t].get() < doneAtCheckpoint[t] + 5000 && !futures.get(t).isDone()) {
                        Thread.onSpinWait();
                    }
                }
                stop.set(true);
                for (Future<?> f : futures) {
                    f.get();
                }
                assertThat(set.info("before").orElseThrow().state()).isEqualTo(DirtyBitmapState.FROZEN);
                assertThat(set.info("after").orElseThrow().state()).isEqualTo(DirtyBitmapState.RECORDING);
                assertThat(set.runs("before", 0, size, Integer.MAX_VALUE)).isEqualTo(frozenAtCheckpoint);

                BitSet before = dirtyGranules(set.runs("before", 0, size, Integer.MAX_VALUE), granularity);
                BitSet after = dirtyGranules(set.runs("after", 0, size, Integer.MAX_VALUE), 4096);
                for (int t = 0; t < threads; t++) {
                    long last = completed[t].get();
                    assertThat(last).as("thread %d marked after the checkpoint", t)
                            .isGreaterThanOrEqualTo(Math.min(perThread - 1, doneAtCheckpoint[t] + 5000));
                    for (long i = 0; i <= last; i++) {
                        long offset = (t * perThread + i) * granularity;
                        boolean inBefore = before.get((int) (offset / granularity));
                        boolean inAfter = after.get((int) (offset / 4096));
                        assertThat(inBefore || inAfter).as("thread %d mark %d", t, i).isTrue();
                        if (i > doneAtCheckpoint[t] + 1) { // began after checkpoint() returned
                            assertThat(inBefore).as("thread %d mark %d in the frozen bitmap", t, i).isFalse();
                        }
                    }
                    int nextDirty = before.nextSetBit((int) (t * perThread + last + 1));
                    assertThat(nextDirty == -1 || nextDirty >= (t + 1) * perThread)
                            .as("thread %d: frozen bitmap dirty at granule %d, never marked", t, nextDirty).isTrue();
                }
            } finally {
                stop.set(true);
                pool.shutdownNow();
            }
        }
    }

    @Test
    void checkpointWaitsForAMarkInProgressWhichLandsInTheFrozenBitmap() throws Exception {
        try (DirtyBitmapSet set = open(MIB)) {
            set.add("old", 4096);
            Runnable paused = set.pausedMarkDirty(5 * 4096, 5 * 4096 + 1);
            ExecutorService pool = Executors.newSingleThreadExecutor();
            try {
                Future<DirtyBitmapInfo> checkpoint = pool.submit(() -> set.checkpoint("old", "new", 4096));
                Thread.sleep(300);
                assertThat(checkpoint).as("checkpoint returned while a mark into 'old' was in progress").isNotDone();
                paused.run();
                checkpoint.get();
            } finally {
                pool.shutdownNow();
            }
            set.markDirty(0, 1);
            assertThat(set.runs("old", 0, MIB, 10)).containsExactly(clean(5 * 4096), dirty(4096), clean(MIB - 6 * 4096));
            assertThat(set.runs("new", 0, MIB, 10))
                    .containsExactly(dirty(4096), clean(MIB - 4096));
        }
    }

    private static long minimum(AtomicLong[] values) {
        long min = Long.MAX_VALUE;
        for (AtomicLong v : values) {
            min = Math.min(min, v.get());
        }
        return min;
    }

    private static BitSet dirtyGranules(List<DirtyRun> runs, long granularity) {
        BitSet bits = new BitSet();
        long pos = 0;
        for (DirtyRun run : runs) {
            if (run.dirty()) {
                bits.set((int) (pos / granularity), (int) ((pos + run.length() - 1) / granularity) + 1);
            }
            pos += run.length();
        }
        return bits;
    }

    @Test
    void checkpointChecksItsArguments() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            set.add("a", 4096);
            set.add("b", 4096);
            assertThatThrownBy(() -> set.checkpoint("missing", "c", 4096)).isInstanceOf(IllegalArgumentException.class);
            assertThatThrownBy(() -> set.checkpoint("a", "b", 4096)).isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("already exists");
            assertThatThrownBy(() -> set.checkpoint("a", "a", 4096)).isInstanceOf(IllegalArgumentException.class);
            assertThat(set.info("a").orElseThrow().state()).isEqualTo(DirtyBitmapState.RECORDING);
            set.checkpoint("a", "c", 4096);
            assertThatThrownBy(() -> set.checkpoint("a", "d", 4096)).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("FROZEN");
            assertThat(set.list()).extracting(DirtyBitmapInfo::name).containsExactly("a", "b", "c");
        }
    }

    @Test
    void mergesBitmapsOfDifferentGranularities() throws IOException {
        long size = 4 * MIB + 1000;
        try (DirtyBitmapSet set = open(size)) {
            set.add("fine", 4096);
            set.markDirty(4096, 1); // fine granule 1
            set.checkpoint("fine", "coarse", MIB);
            set.markDirty(MIB + 10, 1); // coarse granule 1, not in fine
            set.checkpoint("coarse", "target", 64 * KIB);
            set.markDirty(size - 1, 1); // target's last granule

            set.merge("target", List.of("fine", "coarse"));
            assertThat(set.runs("target", 0, size, 100)).containsExactly(
                    dirty(64 * KIB), // fine [4096, 8192) lies in target granule 0
                    clean(MIB - 64 * KIB),
                    dirty(MIB), // the whole coarse granule, 16 target granules
                    clean(2 * MIB),
                    dirty(1000)); // the last target granule, clipped at the export end
            // sources unchanged
            assertThat(set.runs("fine", 0, size, 100)).containsExactly(clean(4096), dirty(4096), clean(size - 8192));

            // a fine target from a coarse source whose last granule is partial
            set.add("fine2", 512);
            set.merge("fine2", List.of("fine"));
            set.checkpoint("target", "t2", 4096);
            set.merge("fine2", List.of("target"));
            assertThat(set.info("fine2").orElseThrow().dirtyBytes()).isEqualTo(64 * KIB + MIB + 1000);

            assertThatThrownBy(() -> set.merge("target", List.of("nope"))).isInstanceOf(IllegalArgumentException.class);
            set.merge("target", List.of());
        }
        // a merged frozen target was persisted
        try (DirtyBitmapSet set = open(size)) {
            assertThat(set.info("target").orElseThrow().state()).isEqualTo(DirtyBitmapState.FROZEN);
            assertThat(set.info("target").orElseThrow().dirtyBytes()).isEqualTo(64 * KIB + MIB + 1000);
        }
    }

    @Test
    void persistsAcrossCloseAndReopen() throws IOException {
        long size = 3 * MIB + 512;
        List<DirtyRun> recordingRuns;
        List<DirtyRun> frozenRuns;
        try (DirtyBitmapSet set = open(size)) {
            set.add("z-first", 64 * KIB);
            set.markDirty(100_000, 300_000);
            set.checkpoint("z-first", "a-second", 512);
            set.markDirty(size - 10, 10);
            set.markDirty(7, 1);
            recordingRuns = set.runs("a-second", 0, size, 100);
            frozenRuns = set.runs("z-first", 0, size, 100);
            assertThat(flagsOnDisk(bitmapDir().resolve("a-second.bitmap"))).isEqualTo(1); // IN_USE while open
            assertThat(flagsOnDisk(bitmapDir().resolve("z-first.bitmap"))).isEqualTo(2); // FROZEN, complete
        }
        assertThat(flagsOnDisk(bitmapDir().resolve("a-second.bitmap"))).isZero();
        assertThat(flagsOnDisk(bitmapDir().resolve("z-first.bitmap"))).isEqualTo(2);
        assertThat(recordingRuns).containsExactly(dirty(512), clean(size - 1024), dirty(512));

        try (DirtyBitmapSet set = open(size)) {
            assertThat(set.list()).containsExactly(
                    new DirtyBitmapInfo("z-first", 64 * KIB, DirtyBitmapState.FROZEN, 6 * 64 * KIB, ""),
                    new DirtyBitmapInfo("a-second", 512, DirtyBitmapState.RECORDING, 1024, ""));
            assertThat(set.runs("a-second", 0, size, 100)).isEqualTo(recordingRuns);
            assertThat(set.runs("z-first", 0, size, 100)).isEqualTo(frozenRuns);
            assertThat(flagsOnDisk(bitmapDir().resolve("a-second.bitmap"))).isEqualTo(1); // marked in use on open
            set.markDirty(MIB, 1);
            set.add("third", 4096);
            assertThat(set.runs("z-first", 0, size, 100)).isEqualTo(frozenRuns);
        }
        try (DirtyBitmapSet set = open(size)) {
            assertThat(set.list()).extracting(DirtyBitmapInfo::name).containsExactly("z-first", "a-second", "third");
            assertThat(set.runs("a-second", 0, size, 100))
                    .containsExactly(dirty(512), clean(MIB - 512), dirty(512), clean(size - MIB - 1024), dirty(512));
        }
    }

    @Test
    void aServerThatDiedLeavesItsRecordingBitmapsInconsistentUntilCleared() throws IOException {
        long size = MIB;
        DirtyBitmapSet crashed = open(size);
        crashed.add("frozen", 4096);
        crashed.markDirty(0, 1);
        crashed.checkpoint("frozen", "live", 4096);
        crashed.markDirty(8192, 1);
        crashed.flush(); // even flushed contents are not trusted: writes could follow the flush
        crashed.abandonWithoutClosing(); // kill -9: files stay as they are, the kernel drops the lock

        try (DirtyBitmapSet set = open(size)) {
            DirtyBitmapInfo live = set.info("live").orElseThrow();
            assertThat(live.state()).isEqualTo(DirtyBitmapState.INCONSISTENT);
            assertThat(live.reason()).contains("did not shut down cleanly").contains("clear or remove");
            assertThat(live.dirtyBytes()).isZero();
            assertThatThrownBy(() -> set.runs("live", 0, size, 10)).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("live").hasMessageContaining("did not shut down cleanly")
                    .hasMessageContaining("clear or remove");
            assertThatThrownBy(() -> set.checkpoint("live", "x", 4096)).isInstanceOf(IllegalStateException.class);
            assertThatThrownBy(() -> set.merge("live", List.of("frozen"))).isInstanceOf(IllegalStateException.class);
            assertThatThrownBy(() -> set.merge("frozen", List.of("live"))).isInstanceOf(IllegalStateException.class);
            set.markDirty(0, size); // does not record into the inconsistent one
            // the frozen bitmap was complete on disk and survives
            assertThat(set.info("frozen").orElseThrow().state()).isEqualTo(DirtyBitmapState.FROZEN);
            assertThat(set.runs("frozen", 0, size, 10)).containsExactly(dirty(4096), clean(size - 4096));
        }
        try (DirtyBitmapSet set = open(size)) { // still inconsistent after a clean close
            assertThat(set.info("live").orElseThrow().state()).isEqualTo(DirtyBitmapState.INCONSISTENT);
            set.clear("live");
            assertThat(set.info("live").orElseThrow()).isEqualTo(
                    new DirtyBitmapInfo("live", 4096, DirtyBitmapState.RECORDING, 0, ""));
            assertThat(set.runs("live", 0, size, 10)).containsExactly(clean(size));
            set.markDirty(3 * 4096, 1);
            assertThat(set.runs("live", 0, size, 10)).containsExactly(clean(3 * 4096), dirty(4096), clean(size - 4 * 4096));
        }
        try (DirtyBitmapSet set = open(size)) {
            assertThat(set.runs("live", 0, size, 10)).containsExactly(clean(3 * 4096), dirty(4096), clean(size - 4 * 4096));
        }
    }

    @Test
    void removesAnInconsistentBitmap() throws IOException {
        DirtyBitmapSet crashed = open(MIB);
        crashed.add("x", 4096);
        crashed.abandonWithoutClosing();
        try (DirtyBitmapSet set = open(MIB)) {
            assertThat(set.info("x").orElseThrow().state()).isEqualTo(DirtyBitmapState.INCONSISTENT);
            set.remove("x");
            assertThat(set.list()).isEmpty();
        }
        try (DirtyBitmapSet set = open(MIB)) {
            assertThat(set.list()).isEmpty();
        }
    }

    @Test
    void aFlippedByteMakesTheBitmapInconsistentWithAChecksumReason() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            set.add("good", 4096);
            set.add("bad", 4096);
            set.markDirty(0, 4096);
        }
        Path file = bitmapDir().resolve("bad.bitmap");
        long length = Files.size(file);
        for (long position : new long[] {0, 15, 50, length - 1}) { // magic, flags, bits, checksum
            flipByte(file, position);
            try (DirtyBitmapSet set = open(MIB)) {
                DirtyBitmapInfo bad = set.info("bad").orElseThrow();
                assertThat(bad.state()).as("byte %d flipped", position).isEqualTo(DirtyBitmapState.INCONSISTENT);
                assertThat(bad.reason()).contains("checksum");
                assertThat(bad.granularity()).isEqualTo(DirtyBitmapSet.DEFAULT_GRANULARITY); // header not trusted
                assertThatThrownBy(() -> set.runs("bad", 0, MIB, 10)).isInstanceOf(IllegalStateException.class)
                        .hasMessageContaining("checksum");
                assertThat(set.runs("good", 0, MIB, 10)).containsExactly(dirty(4096), clean(MIB - 4096));
            }
            flipByte(file, position); // the set left the bad file alone: flipping back repairs it
            try (DirtyBitmapSet set = open(MIB)) {
                assertThat(set.info("bad").orElseThrow().state()).isEqualTo(DirtyBitmapState.RECORDING);
                assertThat(set.runs("bad", 0, MIB, 10)).containsExactly(dirty(4096), clean(MIB - 4096));
            }
        }
    }

    @Test
    void truncatedAndForeignFilesAreInconsistentNotFatal() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            set.add("cut", 4096);
            set.add("tiny", 4096);
        }
        Path cut = bitmapDir().resolve("cut.bitmap");
        try (RandomAccessFile raf = new RandomAccessFile(cut.toFile(), "rw")) {
            raf.setLength(raf.length() - 9);
        }
        Files.write(bitmapDir().resolve("tiny.bitmap"), new byte[] {1, 2, 3});
        Files.writeString(bitmapDir().resolve("notes.txt"), "ignored");
        try (DirtyBitmapSet set = open(MIB)) {
            assertThat(set.info("cut").orElseThrow().state()).isEqualTo(DirtyBitmapState.INCONSISTENT);
            assertThat(set.info("cut").orElseThrow().reason()).isNotBlank();
            assertThat(set.info("tiny").orElseThrow().reason()).contains("truncated");
            assertThat(set.list()).hasSize(2);
            set.clear("tiny");
            assertThat(set.info("tiny").orElseThrow().state()).isEqualTo(DirtyBitmapState.RECORDING);
            assertThat(set.info("tiny").orElseThrow().granularity()).isEqualTo(DirtyBitmapSet.DEFAULT_GRANULARITY);
        }
    }

    @Test
    void aChangedExportSizeMakesTheBitmapInconsistent() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            set.add("b", 4096);
            set.markDirty(0, 1);
        }
        try (DirtyBitmapSet set = open(2 * MIB)) {
            DirtyBitmapInfo info = set.info("b").orElseThrow();
            assertThat(info.state()).isEqualTo(DirtyBitmapState.INCONSISTENT);
            assertThat(info.reason()).contains("export size changed from 1048576 to 2097152");
            assertThat(info.granularity()).isEqualTo(4096); // the header was intact
            assertThatThrownBy(() -> set.runs("b", 0, 10, 1)).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("export size");
            set.clear("b");
            set.markDirty(2 * MIB - 1, 1);
            assertThat(set.runs("b", 0, 2 * MIB, 10)).containsExactly(clean(2 * MIB - 4096), dirty(4096));
        }
        try (DirtyBitmapSet set = open(2 * MIB)) {
            assertThat(set.runs("b", 0, 2 * MIB, 10)).containsExactly(clean(2 * MIB - 4096), dirty(4096));
        }
    }

    @Test
    void writesAtomicallyLeavingNoTemporaryFiles() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            set.add("a", 4096);
            set.add("b", 512);
            set.markDirty(0, 100);
            set.checkpoint("a", "c", 4096);
            set.merge("c", List.of("a", "b"));
            set.clear("b");
            set.flush();
            set.remove("b");
            assertThat(fileNames()).containsExactlyInAnyOrder(".lock", "a.bitmap", "c.bitmap");
        }
        assertThat(fileNames()).containsExactlyInAnyOrder(".lock", "a.bitmap", "c.bitmap");
        // a temporary file left by a crash mid-write is deleted on open; the bitmap it would have replaced stays
        Files.writeString(bitmapDir().resolve(".a.bitmap.tmp"), "half written");
        try (DirtyBitmapSet set = open(MIB)) {
            assertThat(fileNames()).containsExactlyInAnyOrder(".lock", "a.bitmap", "c.bitmap");
            assertThat(set.info("a").orElseThrow().state()).isEqualTo(DirtyBitmapState.FROZEN);
        }
    }

    private List<String> fileNames() throws IOException {
        try (Stream<Path> files = Files.list(bitmapDir())) {
            return files.map(p -> p.getFileName().toString()).toList();
        }
    }

    @Test
    void onlyOneSetMayHaveTheDirectoryOpen() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            assertThatThrownBy(() -> open(MIB)).isInstanceOf(IOException.class).hasMessageContaining("already open");
            set.add("a", 4096);
        }
        try (DirtyBitmapSet set = open(MIB)) {
            assertThat(set.list()).hasSize(1);
        }
    }

    @Test
    void closedSetsRefuseManagementAndIgnoreMarks() throws IOException {
        DirtyBitmapSet set = open(MIB);
        set.add("a", 4096);
        set.close();
        set.close(); // idempotent
        set.markDirty(0, 1);
        assertThatThrownBy(() -> set.add("b", 4096)).isInstanceOf(IllegalStateException.class);
        assertThatThrownBy(() -> set.runs("a", 0, 1, 1)).isInstanceOf(IllegalStateException.class);
        try (DirtyBitmapSet reopened = open(MIB)) {
            assertThat(reopened.runs("a", 0, MIB, 10)).containsExactly(clean(MIB));
        }
    }

    @Test
    void handlesAnEmptyExport() throws IOException {
        try (DirtyBitmapSet set = open(0)) {
            set.add("e", 4096);
            set.markDirty(0, 4096);
            assertThat(set.runs("e", 0, 4096, 10)).isEmpty();
            assertThat(set.info("e").orElseThrow().dirtyBytes()).isZero();
        }
        try (DirtyBitmapSet set = open(0)) {
            assertThat(set.info("e").orElseThrow().state()).isEqualTo(DirtyBitmapState.RECORDING);
        }
    }

    @Test
    void documentsWhereTheFilesLive() {
        assertThat(DirtyBitmapSet.directoryFor(Path.of("/srv/vol/disk.img"))).isEqualTo(Path.of("/srv/vol/disk.img.bitmaps"));
    }

    private static void flipByte(Path file, long position) throws IOException {
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.seek(position);
            int b = raf.read();
            raf.seek(position);
            raf.write(b ^ 0x5a);
        }
    }
    @Test
    void atMost32BitmapsPerExport() throws IOException {
        try (DirtyBitmapSet set = open(MIB)) {
            for (int i = 0; i < DirtyBitmapSet.MAX_BITMAPS; i++) {
                set.add("b" + i, 64 * KIB);
            }
            assertThatThrownBy(() -> set.add("one-more", 64 * KIB))
                    .isInstanceOf(DirtyBitmapLimitException.class)
                    .hasMessage("export already has 32 dirty bitmaps, the most allowed: remove one first");
            assertThatThrownBy(() -> set.checkpoint("b0", "one-more", 64 * KIB))
                    .isInstanceOf(DirtyBitmapLimitException.class);
            assertThat(set.list()).hasSize(32);
            assertThat(set.info("b0").orElseThrow().state()).as("the refused checkpoint froze nothing")
                    .isEqualTo(DirtyBitmapState.RECORDING);
            set.remove("b3");
            set.add("one-more", 64 * KIB);
        }
    }

    @Test
    void theBitsOfAllBitmapsOfAnExportStayWithin64MiB() throws IOException {
        long tib = 1024 * 1024 * MIB;
        try (DirtyBitmapSet set = open(tib)) {
            // 1 TiB at 512 B granules would be 256 MiB of bits.
            assertThatThrownBy(() -> set.add("fine", 512))
                    .isInstanceOf(DirtyBitmapLimitException.class)
                    .hasMessage("dirty bitmap 'fine' (granularity 512) would need 256 MiB for this export's 1099511627776 bytes, "
                            + "more than the 64 MiB all its bitmaps may use (0 MiB in use): choose a coarser granularity");
            set.add("a", 4 * KIB); // 32 MiB
            set.add("b", 4 * KIB); // 64 MiB
            assertThatThrownBy(() -> set.add("c", 64 * KIB)) // 2 MiB more
                    .isInstanceOf(DirtyBitmapLimitException.class)
                    .hasMessageContaining("(64 MiB in use)");
            assertThat(set.list()).extracting(DirtyBitmapInfo::name).containsExactly("a", "b");
        }
    }
}
