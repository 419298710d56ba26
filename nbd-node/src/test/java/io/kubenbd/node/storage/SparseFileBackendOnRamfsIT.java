package io.kubenbd.node.storage;

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
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * ramfs implements no fallocate mode at all, so it is where zeroing must fall back to writing
 * and where fast-only zeroing must refuse. Mounting it needs root, hence an integration test.
 */
class SparseFileBackendOnRamfsIT {
    private static final int MIB = 1 << 20;

    private static Path mountPoint;
    private Path file;
    private byte[] contents;

    @BeforeAll
    static void mountRamfs() throws Exception {
        mountPoint = Files.createTempDirectory("kube-nbd-ramfs-");
        HostCommand.run("mount", "-t", "ramfs", "ramfs", mountPoint.toString());
    }

    @AfterAll
    static void unmountRamfs() throws Exception {
        try {
            HostCommand.run("umount", mountPoint.toString());
        } finally {
            Files.delete(mountPoint);
        }
    }

    @BeforeEach
    void createFile() throws IOException {
        file = Files.createTempFile(mountPoint, "export-", ".img");
        contents = randomBytes(MIB, 42);
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.write(contents);
        }
    }

    @Test
    void cannotTrim() throws IOException {
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            assertThat(backend.supportsTrim()).isFalse();
            backend.trim(0, 64 * 1024);
            assertThat(Files.size(file)).isEqualTo(MIB);
        }
    }

    @Test
    void fastOnlyZeroingRefusesAndLeavesDataAlone() throws IOException {
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            assertThat(backend.writeZeroes(4096, 8192, true, true)).isFalse();
            assertThat(backend.writeZeroes(4096, 8192, false, true)).isFalse();
            assertThat(read(backend, 0, MIB)).isEqualTo(contents);
        }
    }

    @Test
    void zeroingFallsBackToWritingZeroes() throws IOException {
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            assertThat(backend.writeZeroes(4096, 3 * MIB / 4, true, false)).isTrue();
            assertThat(backend.writeZeroes(MIB - 10, 10, false, false)).isTrue();

            byte[] expected = contents.clone();
            Arrays.fill(expected, 4096, 4096 + 3 * MIB / 4, (byte) 0);
            Arrays.fill(expected, MIB - 10, MIB, (byte) 0);
            assertThat(read(backend, 0, MIB)).isEqualTo(expected);
        }
    }

    @Test
    void wholeFileIsData() throws IOException {
        try (StorageBackend backend = StorageBackend.open(file, false)) {
            backend.write(0, ByteBuffer.wrap(new byte[] {1}));
            assertThat(backend.allocation(0, MIB, 8)).containsExactly(Extent.data(MIB));
        }
    }
}
