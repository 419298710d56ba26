package io.kubenbd.node.storage;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** Runs against ext4 (/tmp here) and tmpfs (/dev/shm), which differ in their fallocate modes. */
class SparseFileBackendTest {
    private static final int KIB = 1024;
    private static final int MIB = 1024 * KIB;

    private final List<Path> files = new ArrayList<>();

    static Stream<Path> directories() {
        return Stream.of(Path.of(System.getProperty("java.io.tmpdir")), Path.of("/dev/shm"));
    }

    @AfterEach
    void deleteFiles() throws IOException {
        for (Path file : files) {
            Files.deleteIfExists(file);
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void opensRegularFileWithFileProperties(Path directory) throws IOException {
        Path file = sparseFile(directory, 3 * MIB + 5);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            assertThat(backend).isInstanceOf(SparseFileBackend.class);
            assertThat(backend.size()).isEqualTo(3 * MIB + 5);
            assertThat(backend.readOnly()).isFalse();
            assertThat(backend.minimumBlockSize()).isEqualTo(1);
            assertThat(backend.preferredBlockSize()).isEqualTo(4096);
            assertThat(backend.rotational()).isFalse();
            assertThat(backend.supportsTrim()).isTrue();
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void roundTripsDirectAndHeapBuffersAtLargeOffsets(Path directory) throws IOException {
        long size = 8L << 30;
        Path file = sparseFile(directory, size);
        byte[] first = randomBytes(3 * MIB + 17, 1);
        byte[] second = randomBytes(10_000, 2);
        long farOffset = (5L << 30) + 123;
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            ByteBuffer direct = ByteBuffer.allocateDirect(first.length).put(first).flip();
            backend.write(farOffset, direct);
            assertThat(direct.hasRemaining()).isFalse();
            backend.write(size - second.length, ByteBuffer.wrap(second));

            ByteBuffer heap = ByteBuffer.allocate(first.length);
            backend.read(farOffset, heap);
            assertThat(heap.hasRemaining()).isFalse();
            assertThat(heap.array()).isEqualTo(first);

            ByteBuffer directRead = ByteBuffer.allocateDirect(second.length);
            backend.read(size - second.length, directRead);
            assertThat(bytesOf(directRead.flip())).isEqualTo(second);
        }
        assertThat(Files.size(file)).isEqualTo(size);
    }

    @ParameterizedTest
    @MethodSource("directories")
    void readsAndWritesOnlyBetweenPositionAndLimit(Path directory) throws IOException {
        Path file = sparseFile(directory, MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            ByteBuffer src = ByteBuffer.wrap(new byte[] {9, 1, 2, 3, 9}).position(1).limit(4).asReadOnlyBuffer();
            backend.write(100, src);
            assertThat(src.position()).isEqualTo(4);
            ByteBuffer directSrc = ByteBuffer.allocateDirect(4).put(new byte[] {9, 4, 5, 9}).position(1).limit(3);
            backend.write(103, directSrc.asReadOnlyBuffer());
            ByteBuffer dst = ByteBuffer.allocateDirect(8).position(1).limit(7);
            backend.read(99, dst);
            assertThat(dst.position()).isEqualTo(7);
            assertThat(bytesOf(dst.clear())).containsExactly(0, 0, 1, 2, 3, 4, 5, 0);
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void freshSparseFileIsOneHole(Path directory) throws IOException {
        Path file = sparseFile(directory, 16 * MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            assertThat(backend.allocation(0, 16 * MIB, 16)).containsExactly(Extent.sparseHole(16 * MIB));
            assertThat(backend.allocation(5 * MIB, MIB, 16)).containsExactly(Extent.sparseHole(MIB));
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void writtenBlocksAreDataBetweenHoles(Path directory) throws IOException {
        Path file = sparseFile(directory, 4 * MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            backend.write(MIB, ByteBuffer.wrap(randomBytes(64 * KIB, 3)));

            assertThat(backend.allocation(0, 4 * MIB, 10)).containsExactly(
                    Extent.sparseHole(MIB), Extent.data(64 * KIB), Extent.sparseHole(3 * MIB - 64 * KIB));
            assertThat(backend.allocation(MIB + 4 * KIB, 4 * MIB - MIB - 4 * KIB, 10)).containsExactly(
                    Extent.data(60 * KIB), Extent.sparseHole(3 * MIB - 64 * KIB));
            assertThat(backend.allocation(MIB + 8 * KIB, 16 * KIB, 10)).containsExactly(Extent.data(16 * KIB));
            assertThat(backend.allocation(512 * KIB, 512 * KIB, 10)).containsExactly(Extent.sparseHole(512 * KIB));
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void allocationStopsAtMaxExtents(Path directory) throws IOException {
        Path file = sparseFile(directory, 4 * MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            backend.write(MIB, ByteBuffer.wrap(randomBytes(64 * KIB, 4)));
            backend.write(2 * MIB, ByteBuffer.wrap(randomBytes(64 * KIB, 5)));

            assertThat(backend.allocation(0, 4 * MIB, 1)).containsExactly(Extent.sparseHole(MIB));
            assertThat(backend.allocation(0, 4 * MIB, 3)).containsExactly(
                    Extent.sparseHole(MIB), Extent.data(64 * KIB), Extent.sparseHole(MIB - 64 * KIB));
            assertThat(backend.allocation(0, 4 * MIB, 100)).hasSize(5);
        }
    }

    /** Allocation answers come from a cache of the last data run; anything that makes holes must drop it. */
    @ParameterizedTest
    @MethodSource("directories")
    void allocationSeesHolesMadeAfterItWasAsked(Path directory) throws IOException {
        Path file = sparseFile(directory, 4 * MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            backend.write(0, ByteBuffer.wrap(randomBytes(MIB, 8)));
            assertThat(backend.allocation(0, MIB, 10)).containsExactly(Extent.data(MIB));
            assertThat(backend.allocation(64 * KIB, 4 * KIB, 10)).containsExactly(Extent.data(4 * KIB));

            backend.trim(64 * KIB, 64 * KIB);
            assertThat(backend.allocation(0, 256 * KIB, 10)).containsExactly(
                    Extent.data(64 * KIB), Extent.sparseHole(64 * KIB), Extent.data(128 * KIB));

            assertThat(backend.allocation(512 * KIB, 4 * KIB, 10)).containsExactly(Extent.data(4 * KIB));
            backend.writeZeroes(512 * KIB, 64 * KIB, true, false);
            assertThat(backend.allocation(512 * KIB, 64 * KIB, 10)).containsExactly(Extent.sparseHole(64 * KIB));
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void trimPunchesHoleWithoutChangingSize(Path directory) throws IOException {
        Path file = sparseFile(directory, 4 * MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            backend.write(MIB, ByteBuffer.wrap(randomBytes(64 * KIB, 6)));
            long allocatedBefore = allocatedBytes(file);

            backend.trim(MIB, 32 * KIB);

            assertThat(backend.allocation(0, 4 * MIB, 10)).containsExactly(
                    Extent.sparseHole(MIB + 32 * KIB), Extent.data(32 * KIB), Extent.sparseHole(3 * MIB - 64 * KIB));
            assertThat(read(backend, MIB, 32 * KIB)).containsOnly(0);
            assertThat(allocatedBytes(file)).isEqualTo(allocatedBefore - 32 * KIB);
        }
        assertThat(Files.size(file)).isEqualTo(4 * MIB);
    }

    @ParameterizedTest
    @MethodSource("directories")
    void writeZeroesMayPunchHole(Path directory) throws IOException {
        Path file = sparseFile(directory, 4 * MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            byte[] data = randomBytes(256 * KIB, 7);
            backend.write(0, ByteBuffer.wrap(data));

            assertThat(backend.writeZeroes(64 * KIB, 128 * KIB, true, true)).isTrue();

            byte[] back = read(backend, 0, 256 * KIB);
            assertThat(Arrays.copyOfRange(back, 0, 64 * KIB))
                    .isEqualTo(Arrays.copyOfRange(data, 0, 64 * KIB));
            assertThat(Arrays.copyOfRange(back, 64 * KIB, 192 * KIB)).containsOnly(0);
            assertThat(Arrays.copyOfRange(back, 192 * KIB, 256 * KIB))
                    .isEqualTo(Arrays.copyOfRange(data, 192 * KIB, 256 * KIB));
            assertThat(backend.allocation(64 * KIB, 128 * KIB, 10)).containsExactly(Extent.sparseHole(128 * KIB));
        }
        assertThat(Files.size(file)).isEqualTo(4 * MIB);
    }

    /** Both file systems here can zero without deallocating (ext4 by ZERO_RANGE, tmpfs by punch and fallocate). */
    @ParameterizedTest
    @MethodSource("directories")
    void writeZeroesWithoutHoleKeepsRangeAllocated(Path directory) throws IOException {
        Path file = sparseFile(directory, 4 * MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            backend.write(0, ByteBuffer.wrap(randomBytes(256 * KIB, 8)));
            long allocatedBefore = allocatedBytes(file);

            assertThat(backend.writeZeroes(64 * KIB, 128 * KIB, false, true)).isTrue();
            // A hole that was never written must get allocated too.
            assertThat(backend.writeZeroes(MIB, 128 * KIB, false, true)).isTrue();

            assertThat(read(backend, 64 * KIB, 128 * KIB)).containsOnly(0);
            assertThat(read(backend, MIB, 128 * KIB)).containsOnly(0);
            assertThat(allocatedBytes(file)).isEqualTo(allocatedBefore + 128 * KIB);
        }
        assertThat(Files.size(file)).isEqualTo(4 * MIB);
    }

    @ParameterizedTest
    @MethodSource("directories")
    void writeZeroesHandlesUnalignedRanges(Path directory) throws IOException {
        Path file = sparseFile(directory, MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            byte[] data = randomBytes(MIB, 9);
            backend.write(0, ByteBuffer.wrap(data));
            backend.writeZeroes(1000, 10_000, true, false);
            backend.writeZeroes(50_001, 7, false, false);

            byte[] expected = data.clone();
            Arrays.fill(expected, 1000, 11_000, (byte) 0);
            Arrays.fill(expected, 50_001, 50_008, (byte) 0);
            assertThat(read(backend, 0, MIB)).isEqualTo(expected);
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void cacheLeavesContentsAlone(Path directory) throws IOException {
        Path file = sparseFile(directory, MIB);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            byte[] data = randomBytes(MIB, 10);
            backend.write(0, ByteBuffer.wrap(data));
            backend.cache(0, MIB);
            assertThat(read(backend, 0, MIB)).isEqualTo(data);
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void readOnlyOpenRejectsChangesWithErofs(Path directory) throws IOException {
        Path file = sparseFile(directory, MIB);
        Files.write(file, new byte[] {1, 2, 3});
        try (StorageBackend backend = StorageBackend.open(file, true)) {
            assertThat(backend.readOnly()).isTrue();
            assertThat(backend.supportsTrim()).isFalse();
            assertThat(read(backend, 0, 3)).containsExactly(1, 2, 3);
            assertErrno(() -> backend.write(0, ByteBuffer.wrap(new byte[1])), Errno.EROFS);
            assertErrno(() -> backend.trim(0, 4096), Errno.EROFS);
            assertErrno(() -> backend.writeZeroes(0, 4096, true, false), Errno.EROFS);
            backend.flush();
        }
        assertThat(Files.readAllBytes(file)).containsExactly(1, 2, 3);
    }

    @Test
    void missingFileFailsWithEnoentNamingThePath() {
        Path missing = Path.of(System.getProperty("java.io.tmpdir"), "kube-nbd-missing-" + System.nanoTime());
        assertThatThrownBy(() -> StorageBackend.open(missing, false))
                .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.ENOENT))
                .hasMessageContaining(missing.toString())
                .hasMessageContaining("ENOENT");
    }

    @Test
    void directoriesAndCharacterDevicesAreRejected() {
        Path directory = Path.of(System.getProperty("java.io.tmpdir"));
        assertThatThrownBy(() -> StorageBackend.open(directory, true))
                .isExactlyInstanceOf(IOException.class)
                .hasMessage(directory + " is neither a regular file nor a block device");
        assertThatThrownBy(() -> StorageBackend.open(Path.of("/dev/null"), false))
                .isExactlyInstanceOf(IOException.class)
                .hasMessage("/dev/null is neither a regular file nor a block device");
    }

    @Test
    void readPastShrunkEndOfFileFillsZeroes() throws IOException {
        Path file = sparseFile(Path.of(System.getProperty("java.io.tmpdir")), 8192);
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            backend.write(0, ByteBuffer.wrap(randomBytes(8192, 11)));
            try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
                raf.setLength(4096);
            }
            ByteBuffer dst = ByteBuffer.allocateDirect(8192);
            backend.read(0, dst);
            byte[] back = bytesOf(dst.flip());
            assertThat(Arrays.copyOfRange(back, 4096, 8192)).containsOnly(0);
            assertThat(backend.allocation(4096, 4096, 4)).containsExactly(Extent.sparseHole(4096));
        }
    }

    @ParameterizedTest
    @MethodSource("directories")
    void concurrentPositionalWritesLandWhereAsked(Path directory) throws Exception {
        int threads = 8;
        int blocksPerThread = 64;
        int block = 4096;
        Path file = sparseFile(directory, (long) threads * blocksPerThread * block);
        try (StorageBackend backend = StorageBackend.open(file, false);
             ExecutorService pool = Executors.newFixedThreadPool(threads)) {
            List<Future<?>> writers = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                int thread = t;
                writers.add(pool.submit(() -> {
                    for (int i = 0; i < blocksPerThread; i++) {
                        // Interleaved: neighbouring blocks belong to different threads.
                        int index = i * threads + thread;
                        ByteBuffer buffer = (index % 2 == 0 ? ByteBuffer.allocateDirect(block) : ByteBuffer.allocate(block));
                        buffer.put(pattern(index, block)).flip();
                        backend.write((long) index * block, buffer);
                    }
                    return null;
                }));
            }
            for (Future<?> writer : writers) {
                writer.get();
            }
            for (int index = 0; index < threads * blocksPerThread; index++) {
                assertThat(read(backend, (long) index * block, block)).as("block %d", index).isEqualTo(pattern(index, block));
            }
        }
    }

    private Path sparseFile(Path directory, long size) throws IOException {
        Path file = Files.createTempFile(directory, "kube-nbd-storage-", ".img");
        files.add(file);
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.setLength(size);
        }
        return file;
    }

    static long allocatedBytes(Path file) throws ErrnoException {
        return LinuxSyscalls.stat(file.toString()).allocatedBytes();
    }

    static byte[] read(StorageBackend backend, long offset, int length) throws IOException {
        ByteBuffer buffer = ByteBuffer.allocate(length);
        backend.read(offset, buffer);
        return buffer.array();
    }

    static byte[] randomBytes(int length, long seed) {
        byte[] bytes = new byte[length];
        new Random(seed).nextBytes(bytes);
        return bytes;
    }

    private static byte[] pattern(int index, int length) {
        byte[] bytes = new byte[length];
        for (int i = 0; i < length; i++) {
            bytes[i] = (byte) (index * 31 + i);
        }
        return bytes;
    }

    private static byte[] bytesOf(ByteBuffer buffer) {
        byte[] bytes = new byte[buffer.remaining()];
        buffer.get(bytes);
        return bytes;
    }

    @FunctionalInterface
    interface IoAction {
        void run() throws IOException;
    }

    static void assertErrno(IoAction action, int errno) {
        assertThatThrownBy(action::run)
                .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(errno));
    }
}
