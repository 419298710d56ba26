package io.kubenbd.node.storage;

import static io.kubenbd.node.storage.SparseFileBackendTest.allocatedBytes;
import static io.kubenbd.node.storage.SparseFileBackendTest.assertErrno;
import static io.kubenbd.node.storage.SparseFileBackendTest.randomBytes;
import static io.kubenbd.node.storage.SparseFileBackendTest.read;
import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** A loop device over a sparse file in the temp directory stands in for a disk. */
class BlockDeviceBackendIT {
    private static final int MIB = 1 << 20;
    private static final long SIZE = 64L * MIB;

    private static Path backingFile;
    private static Path device;

    @BeforeAll
    static void attachLoopDevice() throws Exception {
        backingFile = Files.createTempFile("kube-nbd-loop-", ".img");
        try (RandomAccessFile raf = new RandomAccessFile(backingFile.toFile(), "rw")) {
            raf.setLength(SIZE);
        }
        device = Path.of(HostCommand.run("losetup", "--find", "--show", backingFile.toString()));
    }

    @AfterAll
    static void detachLoopDevice() throws Exception {
        try {
            if (device != null) {
                HostCommand.run("losetup", "-d", device.toString());
            }
        } finally {
            Files.deleteIfExists(backingFile);
        }
    }

    @Test
    void reportsGeometryAndQueueProperties() throws Exception {
        try (StorageBackend backend = StorageBackend.open(device, false)) {
            assertThat(backend).isInstanceOf(BlockDeviceBackend.class);
            assertThat(backend.size()).isEqualTo(SIZE);
            assertThat(backend.minimumBlockSize()).isEqualTo(512);
            assertThat(backend.preferredBlockSize()).isGreaterThanOrEqualTo(4096);
            assertThat(Integer.bitCount(backend.preferredBlockSize())).isEqualTo(1);

            Path queue = Path.of("/sys/block", device.getFileName().toString(), "queue");
            assertThat(backend.rotational()).isEqualTo(Files.readString(queue.resolve("rotational")).strip().equals("1"));
            assertThat(backend.supportsTrim())
                    .isEqualTo(Long.parseLong(Files.readString(queue.resolve("discard_max_bytes")).strip()) > 0);
            assertThat(backend.allocation(MIB, SIZE, 10)).containsExactly(Extent.data(SIZE - MIB));
            assertThat(backend.allocation(0, 4096, 10)).containsExactly(Extent.data(4096));
        }
    }

    @Test
    void roundTripsAndFlushes() throws Exception {
        byte[] data = randomBytes(MIB + 4096, 1);
        try (StorageBackend backend = StorageBackend.open(device, false)) {
            backend.write(SIZE - data.length, ByteBuffer.allocateDirect(data.length).put(data).flip());
            backend.write(8 * MIB, ByteBuffer.wrap(data, 0, 4096));
            backend.flush();
            assertThat(read(backend, SIZE - data.length, data.length)).isEqualTo(data);
            ByteBuffer direct = ByteBuffer.allocateDirect(4096);
            backend.read(8 * MIB, direct);
            byte[] back = new byte[4096];
            direct.flip().get(back);
            assertThat(back).isEqualTo(Arrays.copyOf(data, 4096));
        }
        // Flushed through the loop device to the file behind it.
        byte[] onFile = new byte[data.length];
        try (RandomAccessFile raf = new RandomAccessFile(backingFile.toFile(), "r")) {
            raf.seek(SIZE - data.length);
            raf.readFully(onFile);
        }
        assertThat(onFile).isEqualTo(data);
    }

    @Test
    void writeZeroesIncludingPartialSectors() throws Exception {
        long base = 16L * MIB;
        byte[] data = randomBytes(MIB, 2);
        try (StorageBackend backend = StorageBackend.open(device, false)) {
            backend.write(base, ByteBuffer.wrap(data));
            // The loop driver offloads write-zeroes to fallocate on the backing file, so it counts as fast.
            assertThat(backend.writeZeroes(base + 4096, 64 * 1024, false, true)).isTrue();
            assertThat(backend.writeZeroes(base + 100_001, 200_000, true, false)).isTrue();
            assertThat(backend.writeZeroes(base + 700_000, 100, false, false)).isTrue();

            byte[] expected = data.clone();
            Arrays.fill(expected, 4096, 4096 + 64 * 1024, (byte) 0);
            Arrays.fill(expected, 100_001, 300_001, (byte) 0);
            Arrays.fill(expected, 700_000, 700_100, (byte) 0);
            assertThat(read(backend, base, MIB)).isEqualTo(expected);
        }
    }

    @Test
    void trimReleasesSpaceInTheBackingFile() throws Exception {
        long base = 32L * MIB;
        try (StorageBackend backend = StorageBackend.open(device, false)) {
            assertThat(backend.supportsTrim()).isTrue();
            backend.write(base, ByteBuffer.wrap(randomBytes(2 * MIB, 3)));
            backend.flush();
            long allocatedBefore = allocatedBytes(backingFile);

            backend.trim(base, 2 * MIB);
            backend.flush();

            assertThat(allocatedBytes(backingFile)).isLessThanOrEqualTo(allocatedBefore - 2 * MIB);
            // Discard on a loop device punches the backing file, which then reads as zeroes.
            assertThat(read(backend, base, 2 * MIB)).containsOnly(0);
            backend.trim(base + 1, 100);
        }
    }

    @Test
    void readOnlyOpenRejectsChangesWithErofs() throws Exception {
        try (StorageBackend backend = StorageBackend.open(device, true)) {
            assertThat(backend.readOnly()).isTrue();
            assertThat(backend.supportsTrim()).isFalse();
            assertThat(read(backend, 0, 512)).hasSize(512);
            assertErrno(() -> backend.write(0, ByteBuffer.allocate(512)), Errno.EROFS);
            assertErrno(() -> backend.trim(0, 4096), Errno.EROFS);
            assertErrno(() -> backend.writeZeroes(0, 4096, false, false), Errno.EROFS);
        }
    }
}
