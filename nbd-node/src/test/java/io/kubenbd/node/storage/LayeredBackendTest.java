package io.kubenbd.node.storage;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class LayeredBackendTest {
    private static final int KIB = 1024;
    private static final int MIB = 1024 * KIB;
    private static final int CLUSTER = 64 * KIB;

    @TempDir
    Path dir;

    @Test
    void aTopLayerOpenForWritingCannotBeOpenedForWritingAgain() throws IOException {
        Path base = rawBase("base.raw", MIB);
        Path top = overlay("top.img", MIB);
        try (LayeredBackend first = LayeredBackend.open(top, List.of(base), false)) {
            org.assertj.core.api.Assertions.assertThatThrownBy(() -> LayeredBackend.open(top, List.of(base), false))
                    .isInstanceOf(IOException.class).hasMessageContaining("already open for writing");
            try (LayeredBackend reader = LayeredBackend.open(top, List.of(base), true)) {
                assertThat(reader.size()).as("readers are not locked out").isEqualTo(first.size());
            }
        }
        try (LayeredBackend again = LayeredBackend.open(top, List.of(base), false)) {
            assertThat(again.size()).as("closing releases the lock").isEqualTo(MIB);
        }
    }

    // ------------------------------------------------------------------------------------ reads

    @Test
    void emptyOverlayReadsTheBaseAndZeroesBeyondIt() throws IOException {
        Path base = rawBase("base.raw", 3 * MIB + 1000);
        Path top = overlay("top.img", 4 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            assertThat(backend.size()).isEqualTo(4 * MIB);
            assertThat(read(backend, 0, 4 * MIB)).isEqualTo(expected(base, 4 * MIB));
            // A read straddling the base's end: base bytes, then zeroes.
            byte[] straddle = read(backend, 3 * MIB + 900, 300);
            assertThat(Arrays.copyOf(straddle, 100)).isEqualTo(Arrays.copyOfRange(pattern(3 * MIB + 1000), 3 * MIB + 900, 3 * MIB + 1000));
            assertThat(Arrays.copyOfRange(straddle, 100, 300)).containsOnly(0);
            // Direct buffers and odd offsets too.
            ByteBuffer direct = ByteBuffer.allocateDirect(77_777);
            backend.read(12_345, direct);
            assertThat(direct.hasRemaining()).isFalse();
            assertThat(bytes(direct.flip())).isEqualTo(Arrays.copyOfRange(pattern(3 * MIB + 1000), 12_345, 12_345 + 77_777));
        }
    }

    @Test
    void writesOfEveryShapeReadBackAndLeaveTheBaseUnchanged() throws IOException {
        Path base = rawBase("base.raw", 4 * MIB);
        byte[] baseDigest = digest(base);
        Path top = overlay("top.img", 4 * MIB);
        byte[] model = expected(base, 4 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            write(backend, model, CLUSTER, fill(CLUSTER, 1));                       // one aligned cluster
            write(backend, model, 3 * CLUSTER + 100, fill(1000, 2));                // inside a cluster
            write(backend, model, 6 * CLUSTER - 10, fill(20, 3));                   // across a boundary
            write(backend, model, 8 * CLUSTER + 5, fill(5 * CLUSTER, 4));           // partial, whole x4, partial
            write(backend, model, 20 * CLUSTER, fill(3 * CLUSTER, 5));              // aligned run
            write(backend, model, 3 * CLUSTER + 50, fill(100, 6));                  // over a copied-up cluster
            write(backend, model, 4 * MIB - 1, fill(1, 7));                         // last byte
            ByteBuffer direct = ByteBuffer.allocateDirect(300_000);
            byte[] heap = fill(300_000, 8);
            direct.put(heap).flip();
            backend.write(2 * MIB + 333, direct);
            assertThat(direct.hasRemaining()).isFalse();
            System.arraycopy(heap, 0, model, 2 * MIB + 333, heap.length);

            assertThat(read(backend, 0, 4 * MIB)).isEqualTo(model);
        }
        assertThat(digest(base)).isEqualTo(baseDigest);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), true)) {
            assertThat(read(backend, 0, 4 * MIB)).isEqualTo(model);
        }
    }

    // ---------------------------------------------------------------------------------- depth

    @Test
    void depthIsOneWhereWrittenTwoWhereBaseAndZeroBeyondShorterBase() throws IOException {
        Path base = rawBase("base.raw", 2 * MIB + 100);
        Path top = overlay("top.img", 4 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            assertThat(backend.depth(0, 4 * MIB, 100)).containsExactly(
                    new DepthRun(2 * MIB + 100, 2), new DepthRun(2 * MIB - 100, 0));
            backend.write(CLUSTER + 10, ByteBuffer.wrap(new byte[10]));          // cluster 1
            backend.write(3L * MIB, ByteBuffer.wrap(new byte[2 * CLUSTER]));    // clusters 48, 49: beyond the base
            assertThat(backend.depth(0, 4 * MIB, 100)).containsExactly(
                    new DepthRun(CLUSTER, 2),
                    new DepthRun(CLUSTER, 1),
                    new DepthRun(2 * MIB + 100 - 2 * CLUSTER, 2),
                    new DepthRun(MIB - 100, 0),
                    new DepthRun(2 * CLUSTER, 1),
                    new DepthRun(MIB - 2 * CLUSTER, 0));
            // From an offset, limited, and cut at the requested length.
            assertThat(backend.depth(CLUSTER + 5, 4 * MIB, 2)).containsExactly(
                    new DepthRun(CLUSTER - 5, 1), new DepthRun(2 * MIB + 100 - 2 * CLUSTER, 2));
            assertThat(backend.depth(100, 50, 10)).containsExactly(new DepthRun(50, 2));
            // Never past the end.
            assertThat(backend.depth(4 * MIB - 10, 1000, 10)).containsExactly(new DepthRun(10, 0));
        }
    }

    @Test
    void allocationAcrossLayers() throws IOException {
        Path base = dir.resolve("base.raw");
        // Base: 1 MiB of data, then a 1 MiB hole.
        Files.write(base, pattern(MIB));
        try (java.io.RandomAccessFile file = new java.io.RandomAccessFile(base.toFile(), "rw")) {
            file.setLength(2 * MIB);
        }
        Path top = overlay("top.img", 3 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            assertThat(backend.allocation(0, 3 * MIB, 100)).containsExactly(
                    Extent.data(MIB), Extent.sparseHole(2 * MIB));
            backend.write(MIB + CLUSTER, ByteBuffer.wrap(fill(CLUSTER, 9)));    // data over the base's hole
            backend.trim(0, CLUSTER);                                            // zero over the base's data
            assertThat(backend.allocation(0, 3 * MIB, 100)).containsExactly(
                    Extent.sparseHole(CLUSTER),
                    Extent.data(MIB - CLUSTER),
                    Extent.sparseHole(CLUSTER),
                    Extent.data(CLUSTER),
                    Extent.sparseHole(2 * MIB - 2 * CLUSTER));
            assertThat(backend.allocation(0, 3 * MIB, 2)).containsExactly(
                    Extent.sparseHole(CLUSTER), Extent.data(MIB - CLUSTER));
            assertThat(backend.allocation(3 * MIB - 5, 100, 5)).containsExactly(Extent.sparseHole(5));
        }
    }

    // ------------------------------------------------------------------------- trim and zeroes

    @Test
    void trimMasksTheBaseIncludingPartialClusters() throws IOException {
        Path base = rawBase("base.raw", 2 * MIB);
        Path top = overlay("top.img", 2 * MIB);
        byte[] model = expected(base, 2 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            write(backend, model, 4 * CLUSTER, fill(2 * CLUSTER, 1));  // DATA clusters 4, 5
            long start = CLUSTER + 100;                                // partial 1, whole 2..6, partial 7
            long end = 7 * CLUSTER + 200;
            backend.trim(start, end - start);
            Arrays.fill(model, (int) start, (int) end, (byte) 0);
            assertThat(read(backend, 0, 2 * MIB)).isEqualTo(model);
            assertThat(backend.depth(0, 2 * MIB, 100)).containsExactly(
                    new DepthRun(CLUSTER, 2), new DepthRun(7 * CLUSTER, 1), new DepthRun(2 * MIB - 8 * CLUSTER, 2));
            // Whole clusters became ZERO (hole+zero); the copied-up edges hold data.
            assertThat(backend.allocation(0, 8 * CLUSTER, 100)).containsExactly(
                    Extent.data(2 * CLUSTER), Extent.sparseHole(5 * CLUSTER), Extent.data(CLUSTER));
            // A partial write into a ZERO cluster copies up zeroes, never the base.
            write(backend, model, 3 * CLUSTER + 7, fill(3, 2));
            assertThat(read(backend, 0, 2 * MIB)).isEqualTo(model);
        }
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), true)) {
            assertThat(read(backend, 0, 2 * MIB)).isEqualTo(model);
        }
    }

    @Test
    void trimReleasesTopLayerStorage() throws IOException {
        Path base = rawBase("base.raw", 8 * MIB);
        Path top = overlay("top.img", 8 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            backend.write(0, ByteBuffer.wrap(fill(8 * MIB, 3)));
            backend.flush();
            long before = LinuxSyscalls.stat(top.toString()).allocatedBytes();
            assertThat(before).isGreaterThanOrEqualTo(8 * MIB);
            backend.trim(0, 8 * MIB);
            long after = LinuxSyscalls.stat(top.toString()).allocatedBytes();
            assertThat(after).isLessThan(MIB);
            assertThat(read(backend, 0, 8 * MIB)).containsOnly(0);
        }
    }

    @Test
    void writeZeroesMasksTheBaseWithAndWithoutHoles() throws IOException {
        Path base = rawBase("base.raw", 2 * MIB);
        Path top = overlay("top.img", 2 * MIB);
        byte[] model = expected(base, 2 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            write(backend, model, 0, fill(4 * CLUSTER, 4));
            // NO_HOLE over DATA clusters and unallocated ones.
            assertThat(backend.writeZeroes(2 * CLUSTER, 4 * CLUSTER, false, false)).isTrue();
            Arrays.fill(model, 2 * CLUSTER, 6 * CLUSTER, (byte) 0);
            // Fast zeroing of whole clusters is fast.
            assertThat(backend.writeZeroes(10 * CLUSTER, 2 * CLUSTER, true, true)).isTrue();
            Arrays.fill(model, 10 * CLUSTER, 12 * CLUSTER, (byte) 0);
            // A partial cluster the top does not hold needs a copy-up: not fast, and nothing changes.
            assertThat(backend.writeZeroes(14 * CLUSTER, CLUSTER + 1, true, true)).isFalse();
            assertThat(backend.depth(14 * CLUSTER, 2 * CLUSTER, 10)).containsExactly(new DepthRun(2 * CLUSTER, 2));
            // Partial zeroing of a DATA cluster is in place, hence fast.
            assertThat(backend.writeZeroes(100, 1000, true, true)).isTrue();
            Arrays.fill(model, 100, 1100, (byte) 0);
            // The slow way does it.
            assertThat(backend.writeZeroes(14 * CLUSTER, CLUSTER + 1, true, false)).isTrue();
            Arrays.fill(model, 14 * CLUSTER, 15 * CLUSTER + 1, (byte) 0);

            assertThat(read(backend, 0, 2 * MIB)).isEqualTo(model);
            assertThat(backend.depth(0, 2 * MIB, 100)).containsExactly(
                    new DepthRun(6 * CLUSTER, 1), new DepthRun(4 * CLUSTER, 2), new DepthRun(2 * CLUSTER, 1),
                    new DepthRun(2 * CLUSTER, 2), new DepthRun(2 * CLUSTER, 1), new DepthRun(2 * MIB - 16 * CLUSTER, 2));
        }
    }

    @Test
    void zeroingPartOfAClusterOverZeroesMarksItZero() throws IOException {
        Path base = dir.resolve("base.raw");
        Files.write(base, new byte[MIB]);
        Path top = overlay("top.img", MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            backend.writeZeroes(100, 200, true, false);
            // The copy-up found only zeroes, so the cluster is ZERO rather than a cluster of written zeroes.
            assertThat(backend.allocation(0, CLUSTER, 10)).containsExactly(Extent.sparseHole(CLUSTER));
            assertThat(backend.depth(0, CLUSTER, 10)).containsExactly(new DepthRun(CLUSTER, 1));
        }
    }

    // ----------------------------------------------------------------------------------- chains

    @Test
    void threeLayersFallThroughWithDepthsOneTwoThree() throws IOException {
        Path base = rawBase("base.raw", 2 * MIB);
        Path middle = overlay("middle.img", 2 * MIB);
        byte[] model = expected(base, 2 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(middle, List.of(base), false)) {
            write(backend, model, 2 * CLUSTER, fill(2 * CLUSTER, 1));      // middle holds clusters 2, 3
            backend.trim(6 * CLUSTER, CLUSTER);                              // middle masks cluster 6
            Arrays.fill(model, 6 * CLUSTER, 7 * CLUSTER, (byte) 0);
        }
        Path top = overlay("top.img", 3 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(middle, base), false)) {
            assertThat(backend.layerCount()).isEqualTo(3);
            assertThat(Arrays.copyOf(read(backend, 0, 3 * MIB), 2 * MIB)).isEqualTo(model);
            write(backend, model, 3 * CLUSTER + 10, fill(10, 2));          // top over middle's data
            write(backend, model, 5 * CLUSTER + 1, fill(1, 3));            // top over the base
            write(backend, model, 6 * CLUSTER + 1, fill(1, 4));            // top over middle's zeroes
            byte[] all = read(backend, 0, 3 * MIB);
            assertThat(Arrays.copyOf(all, 2 * MIB)).isEqualTo(model);
            assertThat(Arrays.copyOfRange(all, 2 * MIB, 3 * MIB)).containsOnly(0);
            assertThat(backend.depth(0, 3 * MIB, 100)).containsExactly(
                    new DepthRun(2 * CLUSTER, 3),
                    new DepthRun(CLUSTER, 2),
                    new DepthRun(CLUSTER, 1),
                    new DepthRun(CLUSTER, 3),
                    new DepthRun(2 * CLUSTER, 1),
                    new DepthRun(2 * MIB - 7 * CLUSTER, 3),
                    new DepthRun(MIB, 0));
        }
    }

    @Test
    void overlayBackingShorterThanTopReadsZeroesPastItsEndWithoutConsultingItsBacking() throws IOException {
        Path base = rawBase("base.raw", 4 * MIB);
        Path middle = overlay("middle.img", MIB);
        Path top = overlay("top.img", 4 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(middle, base), false)) {
            byte[] all = read(backend, 0, 4 * MIB);
            assertThat(Arrays.copyOf(all, MIB)).isEqualTo(Arrays.copyOf(pattern(4 * MIB), MIB));
            assertThat(Arrays.copyOfRange(all, MIB, 4 * MIB)).containsOnly(0);
            assertThat(backend.depth(0, 4 * MIB, 10)).containsExactly(new DepthRun(MIB, 3), new DepthRun(3 * MIB, 0));
        }
    }

    @Test
    void singleLayerOverlayReportsDepthOneOrZero() throws IOException {
        Path top = overlay("top.img", MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(), false)) {
            assertThat(backend.depth(0, MIB, 10)).containsExactly(new DepthRun(MIB, 0));
            assertThat(backend.allocation(0, MIB, 10)).containsExactly(Extent.sparseHole(MIB));
            backend.write(CLUSTER + 1, ByteBuffer.wrap(new byte[] {42}));
            assertThat(backend.depth(0, MIB, 10)).containsExactly(
                    new DepthRun(CLUSTER, 0), new DepthRun(CLUSTER, 1), new DepthRun(MIB - 2 * CLUSTER, 0));
            byte[] cluster = read(backend, CLUSTER, CLUSTER);
            assertThat(cluster[1]).isEqualTo((byte) 42);
            cluster[1] = 0;
            assertThat(cluster).containsOnly(0);
        }
    }

    @Test
    void chainsThatCannotWorkAreRefused() throws IOException {
        Path base = rawBase("base.raw", MIB);
        Path raw2 = rawBase("raw2.raw", MIB);
        Path top = overlay("top.img", MIB);
        assertThatThrownBy(() -> LayeredBackend.open(top, List.of(raw2, base), false))
                .isInstanceOf(IOException.class).hasMessageContaining("only the bottom");
        assertThatThrownBy(() -> LayeredBackend.open(top, List.of(top, base), false))
                .isInstanceOf(IOException.class).hasMessageContaining("twice");
        assertThatThrownBy(() -> LayeredBackend.open(top, List.of(dir.resolve("missing")), false))
                .isInstanceOf(IOException.class);
    }

    // ------------------------------------------------------------------------------ concurrency

    @Test
    void concurrentWritersToOneClusterAllLand() throws Exception {
        Path base = rawBase("base.raw", MIB);
        for (int round = 0; round < 20; round++) {
            Path top = overlay("top" + round + ".img", MIB);
            byte[] model = expected(base, MIB);
            try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false);
                 ExecutorService pool = Executors.newFixedThreadPool(8)) {
                CountDownLatch start = new CountDownLatch(1);
                List<Future<?>> futures = new ArrayList<>();
                for (int t = 0; t < 8; t++) {
                    int thread = t;
                    // Each thread writes its own bytes in cluster 3; one also spans into cluster 4.
                    long offset = 3L * CLUSTER + thread * 1000 + round;
                    byte[] data = fill(thread == 7 ? CLUSTER : 500, 100 + thread);
                    System.arraycopy(data, 0, model, (int) offset, data.length);
                    futures.add(pool.submit(() -> {
                        start.await();
                        backend.write(offset, ByteBuffer.wrap(data));
                        return null;
                    }));
                }
                start.countDown();
                for (Future<?> future : futures) {
                    future.get();
                }
                assertThat(read(backend, 0, MIB)).as("round %d", round).isEqualTo(model);
            }
        }
    }

    @Test
    void randomOperationsMatchAModelAcrossReopens() throws Exception {
        Path base = rawBase("base.raw", 3 * MIB);
        Path middle = overlay("middle.img", 2 * MIB + 5000, 4096);
        Path top = overlay("top.img", 4 * MIB + 3, CLUSTER);
        int size = 4 * MIB + 3;
        byte[] model = new byte[size];
        System.arraycopy(pattern(3 * MIB), 0, model, 0, 2 * MIB + 5000);
        Random random = new Random(42);
        // Fill the middle layer a bit first.
        try (LayeredBackend backend = LayeredBackend.open(middle, List.of(base), false)) {
            for (int i = 0; i < 50; i++) {
                int offset = random.nextInt(2 * MIB + 5000 - 1);
                int length = 1 + random.nextInt(Math.min(100_000, 2 * MIB + 5000 - offset));
                if (random.nextInt(4) == 0) {
                    backend.trim(offset, length);
                    Arrays.fill(model, offset, offset + length, (byte) 0);
                } else {
                    write(backend, model, offset, fill(length, random.nextInt()));
                }
            }
        }
        for (int session = 0; session < 4; session++) {
            try (LayeredBackend backend = LayeredBackend.open(top, List.of(middle, base), false)) {
                assertThat(read(backend, 0, size)).as("after reopen %d", session).isEqualTo(model);
                for (int i = 0; i < 60; i++) {
                    int offset = random.nextInt(size - 1);
                    int length = 1 + random.nextInt(Math.min(300_000, size - offset));
                    switch (random.nextInt(5)) {
                        case 0 -> {
                            backend.trim(offset, length);
                            Arrays.fill(model, offset, offset + length, (byte) 0);
                        }
                        case 1 -> {
                            backend.writeZeroes(offset, length, random.nextBoolean(), false);
                            Arrays.fill(model, offset, offset + length, (byte) 0);
                        }
                        default -> write(backend, model, offset, fill(length, random.nextInt()));
                    }
                    if (i % 10 == 0) {
                        int at = random.nextInt(size - 1);
                        int len = 1 + random.nextInt(Math.min(200_000, size - at));
                        assertThat(read(backend, at, len)).isEqualTo(Arrays.copyOfRange(model, at, at + len));
                    }
                }
                assertThat(read(backend, 0, size)).isEqualTo(model);
                long total = 0;
                for (DepthRun run : depthAll(backend)) {
                    total += run.length();
                }
                assertThat(total).isEqualTo(size);
            }
        }
    }

    // ------------------------------------------------------------------------------ persistence

    @Test
    void closeAndReopenKeepsDataAndMap() throws IOException {
        Path base = rawBase("base.raw", 2 * MIB);
        Path top = overlay("top.img", 2 * MIB);
        byte[] model = expected(base, 2 * MIB);
        List<DepthRun> depths;
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            write(backend, model, 1000, fill(200_000, 1));
            backend.trim(10 * CLUSTER, 3 * CLUSTER);
            Arrays.fill(model, 10 * CLUSTER, 13 * CLUSTER, (byte) 0);
            depths = backend.depth(0, 2 * MIB, 100);
        }
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            assertThat(read(backend, 0, 2 * MIB)).isEqualTo(model);
            assertThat(backend.depth(0, 2 * MIB, 100)).isEqualTo(depths);
        }
    }

    @Test
    void crashWithoutCloseKeepsEveryFlushedAndEveryAcknowledgedWrite() throws IOException {
        Path base = rawBase("base.raw", 2 * MIB);
        Path top = overlay("top.img", 2 * MIB);
        byte[] model = expected(base, 2 * MIB);
        LayeredBackend crashed = LayeredBackend.open(top, List.of(base), false);
        write(crashed, model, 3 * CLUSTER + 17, fill(1234, 5));
        crashed.trim(7 * CLUSTER, 2 * CLUSTER);
        Arrays.fill(model, 7 * CLUSTER, 9 * CLUSTER, (byte) 0);
        crashed.flush();
        // Acknowledged but not flushed: the map must already be on disk (a process crash keeps the page cache).
        write(crashed, model, 20 * CLUSTER + 1, fill(10, 6));
        // The process "dies" here: no flush, no close. Another opener sees the file as the kernel has it.
        try (LayeredBackend reopened = LayeredBackend.open(top, List.of(base), true)) {
            assertThat(read(reopened, 0, 2 * MIB)).isEqualTo(model);
            assertThat(reopened.depth(0, 2 * MIB, 100)).isEqualTo(crashed.depth(0, 2 * MIB, 100));
        }
        crashed.close();
    }

    @Test
    void readOnlyRejectsChangesWithErofs() throws IOException {
        Path base = rawBase("base.raw", MIB);
        Path top = overlay("top.img", MIB);
        byte[] topDigest = digest(top);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), true)) {
            assertThat(backend.readOnly()).isTrue();
            assertThat(backend.supportsTrim()).isFalse();
            assertErofs(() -> backend.write(0, ByteBuffer.wrap(new byte[10])));
            assertErofs(() -> backend.write(0, ByteBuffer.wrap(new byte[CLUSTER])));
            assertErofs(() -> backend.trim(0, CLUSTER));
            assertErofs(() -> backend.writeZeroes(0, CLUSTER, true, false));
            backend.flush();
            assertThat(read(backend, 0, MIB)).isEqualTo(pattern(MIB));
        }
        assertThat(digest(top)).isEqualTo(topDigest);
    }

    @ParameterizedTest
    @ValueSource(ints = {4096, 65536, 2 * 1024 * 1024})
    void clusterSizesFromSmallestToLargestWork(int clusterSize) throws IOException {
        Path base = rawBase("base.raw", 5 * MIB + 7);
        Path top = overlay("top.img", 6 * MIB, clusterSize);
        byte[] model = expected(base, 6 * MIB);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(base), false)) {
            assertThat(backend.preferredBlockSize()).isEqualTo(clusterSize);
            write(backend, model, clusterSize - 3, fill(7, 1));
            write(backend, model, 4 * MIB + 1, fill(MIB, 2));
            backend.trim(100, 2 * clusterSize);
            Arrays.fill(model, 100, 100 + 2 * clusterSize, (byte) 0);
            backend.writeZeroes(6 * MIB - clusterSize - 1, clusterSize + 1, true, false);
            Arrays.fill(model, 6 * MIB - clusterSize - 1, 6 * MIB, (byte) 0);
            assertThat(read(backend, 0, 6 * MIB)).isEqualTo(model);
        }
    }

    @Test
    void largeRequestsAcrossLockChunksAndMapBlocksPersist() throws IOException {
        // 4 KiB clusters: one 4 KiB map block covers 16384 clusters (64 MiB); 80 MiB needs two.
        int size = 80 * MIB;
        Path top = overlay("top.img", size, 4096);
        long boundary = 64L * MIB;
        byte[] data = fill(3 * MIB + 123, 11);                      // ~800 clusters: several lock chunks
        long at = boundary - MIB - 7;
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(), false)) {
            backend.write(at, ByteBuffer.wrap(data));
            backend.trim(boundary - 4096, 2 * 4096);                // one ZERO cluster in each map block
        }
        Arrays.fill(data, (int) (boundary - 4096 - at), (int) (boundary + 4096 - at), (byte) 0);
        try (LayeredBackend backend = LayeredBackend.open(top, List.of(), true)) {
            assertThat(read(backend, at, data.length)).isEqualTo(data);
            assertThat(backend.depth(0, size, 10)).containsExactly(
                    new DepthRun(at - at % 4096, 0),
                    new DepthRun(OverlayImage.roundUp(at + data.length, 4096) - (at - at % 4096), 1),
                    new DepthRun(size - OverlayImage.roundUp(at + data.length, 4096), 0));
        }
        // On disk: cluster 16383 (last of map block 0) and 16384 (first of block 1) are ZERO.
        ByteBuffer map = OverlayImageTest.readBytes(top, 4096, 8192);
        assertThat(map.get(4095) & 0xc0).isEqualTo(2 << 6);
        assertThat(map.get(4096) & 0x03).isEqualTo(2);
        assertThat(map.get(4094) & 0xff).isEqualTo(0x55);             // DATA, DATA, DATA, DATA
    }

    // ---------------------------------------------------------------------------------- helpers

    private interface IoAction {
        void run() throws IOException;
    }

    private static void assertErofs(IoAction action) {
        assertThatThrownBy(action::run)
                .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EROFS));
    }

    private static List<DepthRun> depthAll(LayeredBackend backend) throws IOException {
        List<DepthRun> all = new ArrayList<>();
        long position = 0;
        while (position < backend.size()) {
            List<DepthRun> runs = backend.depth(position, backend.size() - position, 7);
            assertThat(runs).isNotEmpty().hasSizeLessThanOrEqualTo(7);
            for (DepthRun run : runs) {
                all.add(run);
                position += run.length();
            }
        }
        return all;
    }

    private Path overlay(String name, long size) throws IOException {
        return overlay(name, size, OverlayImage.DEFAULT_CLUSTER_SIZE);
    }

    private Path overlay(String name, long size, int clusterSize) throws IOException {
        Path path = dir.resolve(name);
        OverlayImage.create(path, size, clusterSize);
        return path;
    }

    private Path rawBase(String name, int size) throws IOException {
        Path path = dir.resolve(name);
        Files.write(path, pattern(size));
        return path;
    }

    /** Bytes that differ from their neighbours and from any cluster-aligned copy of themselves. */
    static byte[] pattern(int size) {
        byte[] bytes = new byte[size];
        for (int i = 0; i < size; i++) {
            bytes[i] = (byte) (i * 7 + (i >>> 9) * 13 + (i >>> 16) + 1);
        }
        return bytes;
    }

    private static byte[] expected(Path base, int size) throws IOException {
        return Arrays.copyOf(Files.readAllBytes(base), size);
    }

    private static byte[] fill(int length, int seed) {
        byte[] bytes = new byte[length];
        new Random(seed).nextBytes(bytes);
        return bytes;
    }

    private static void write(StorageBackend backend, byte[] model, long offset, byte[] data) throws IOException {
        ByteBuffer buffer = ByteBuffer.wrap(data);
        backend.write(offset, buffer);
        assertThat(buffer.hasRemaining()).isFalse();
        System.arraycopy(data, 0, model, (int) offset, data.length);
    }

    private static byte[] read(StorageBackend backend, long offset, int length) throws IOException {
        ByteBuffer buffer = ByteBuffer.allocate(length);
        backend.read(offset, buffer);
        assertThat(buffer.hasRemaining()).isFalse();
        return buffer.array();
    }

    private static byte[] bytes(ByteBuffer buffer) {
        byte[] bytes = new byte[buffer.remaining()];
        buffer.get(bytes);
        return bytes;
    }

    private static byte[] digest(Path file) throws IOException {
        try {
            return MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(file));
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError(e);
        }
    }
}
