package io.kubenbd.node.storage;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.List;
import java.util.zip.CRC32C;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

/** The on-disk format, checked byte by byte, and the refusal of damaged images. */
class OverlayImageTest {
    private static final int KIB = 1024;
    private static final int MIB = 1024 * KIB;

    @TempDir
    Path dir;

    @Test
    void createWritesDocumentedHeaderAndSparseFile() throws IOException {
        Path image = dir.resolve("top.img");
        long size = 10L * MIB + 123;
        OverlayImage.create(image, size);

        long clusters = (size + 65535) / 65536; // 161
        long mapLength = 4096; // ceil(161 / 4) = 41 bytes, rounded up to a map block
        long dataOffset = 65536; // 4096 + 4096 rounded up to the cluster size
        assertThat(Files.size(image)).isEqualTo(dataOffset + clusters * 65536);

        ByteBuffer header = readBytes(image, 0, 4096);
        assertThat(Arrays.copyOf(header.array(), 8)).isEqualTo("KNBDOVL1".getBytes());
        assertThat(header.getInt(8)).isEqualTo(1);
        assertThat(header.getInt(12)).isEqualTo(65536);
        assertThat(header.getLong(16)).isEqualTo(size);
        assertThat(header.getLong(24)).isZero();
        assertThat(header.getLong(32)).isEqualTo(4096);
        assertThat(header.getLong(40)).isEqualTo(mapLength);
        assertThat(header.getLong(48)).isEqualTo(dataOffset);
        for (int i = 56; i < 4092; i++) {
            assertThat(header.get(i)).as("reserved byte %d", i).isZero();
        }
        CRC32C crc = new CRC32C();
        crc.update(header.array(), 0, 4092);
        assertThat(header.getInt(4092)).isEqualTo((int) crc.getValue());
        // The map starts all UNALLOCATED.
        assertThat(readBytes(image, 4096, 4096).array()).containsOnly(0);

        assertThat(OverlayImage.isOverlay(image)).isTrue();
        assertThat(LinuxSyscalls.stat(image.toString()).allocatedBytes()).isLessThan(MIB);
        try (LayeredBackend backend = LayeredBackend.open(image, List.of(), false)) {
            assertThat(backend.size()).isEqualTo(size);
            assertThat(backend.preferredBlockSize()).isEqualTo(65536);
            assertThat(backend.readOnly()).isFalse();
            assertThat(backend.supportsTrim()).isTrue();
        }
    }

    @Test
    void mapAndDataLandWhereTheFormatSays() throws IOException {
        Path image = dir.resolve("top.img");
        OverlayImage.create(image, 4 * MIB, 4096);
        // clusters = 1024; map = 256 bytes -> one 4 KiB block; data offset = 8192.
        byte[] data = new byte[4096];
        Arrays.fill(data, (byte) 0x5a);
        try (LayeredBackend backend = LayeredBackend.open(image, List.of(), false)) {
            backend.write(5 * 4096, ByteBuffer.wrap(data));             // cluster 5: DATA
            backend.writeZeroes(6 * 4096, 4096, true, false);           // cluster 6: ZERO
            backend.write(1023L * 4096 + 10, ByteBuffer.wrap(new byte[] {1})); // last cluster, partial: DATA
        }
        ByteBuffer map = readBytes(image, 4096, 4096);
        // Cluster 5 is byte 1, bits 2-3; cluster 6 is byte 1, bits 4-5.
        assertThat(map.get(1)).isEqualTo((byte) ((1 << 2) | (2 << 4)));
        // Cluster 1023 is byte 255, bits 6-7.
        assertThat(map.get(255)).isEqualTo((byte) (1 << 6));
        assertThat(map.get(0)).isZero();
        assertThat(readBytes(image, 8192 + 5 * 4096, 4096).array()).isEqualTo(data);
        ByteBuffer last = readBytes(image, 8192 + 1023L * 4096, 4096);
        assertThat(last.get(10)).isEqualTo((byte) 1);
    }

    @Test
    void isOverlayIsFalseForRawFilesAndDirectories() throws IOException {
        Path raw = dir.resolve("raw.img");
        Files.write(raw, new byte[4096]);
        Path tiny = dir.resolve("tiny");
        Files.write(tiny, "KNBD".getBytes());
        assertThat(OverlayImage.isOverlay(raw)).isFalse();
        assertThat(OverlayImage.isOverlay(tiny)).isFalse();
        assertThat(OverlayImage.isOverlay(dir)).isFalse();
    }

    @Test
    void createRefusesExistingFileAndBadSizes() throws IOException {
        Path image = dir.resolve("top.img");
        OverlayImage.create(image, MIB);
        assertThatThrownBy(() -> OverlayImage.create(image, MIB)).isInstanceOf(FileAlreadyExistsException.class);
        assertThatThrownBy(() -> OverlayImage.create(dir.resolve("a"), 0)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> OverlayImage.create(dir.resolve("b"), MIB, 3000))
                .isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void corruptedHeaderIsRefusedWithClearMessage() throws IOException {
        Path image = dir.resolve("top.img");
        OverlayImage.create(image, 8 * MIB);
        // Flip one bit of the virtual size: the CRC catches it.
        patch(image, 17, (byte) 0x01);
        assertThatThrownBy(() -> LayeredBackend.open(image, List.of(), false))
                .isInstanceOf(IOException.class)
                .hasMessageContaining(image.toString())
                .hasMessageContaining("header is corrupt");
    }

    @Test
    void badMagicIsRefused() throws IOException {
        Path image = dir.resolve("top.img");
        OverlayImage.create(image, 8 * MIB);
        patch(image, 0, (byte) 'X');
        assertThatThrownBy(() -> LayeredBackend.open(image, List.of(), false))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("not an overlay image");
        Path raw = dir.resolve("raw.img");
        Files.write(raw, new byte[100]);
        assertThatThrownBy(() -> LayeredBackend.open(raw, List.of(), false))
                .isInstanceOf(IOException.class)
                .hasMessageContaining("not an overlay image");
    }

    @Test
    void headerWithValidCrcButUnknownVersionOrFlagsIsRefused() throws IOException {
        Path image = dir.resolve("top.img");
        OverlayImage.create(image, 8 * MIB);
        rewriteHeader(image, h -> h.putInt(8, 2));
        assertThatThrownBy(() -> LayeredBackend.open(image, List.of(), false))
                .isInstanceOf(IOException.class).hasMessageContaining("unsupported overlay image version 2");
        rewriteHeader(image, h -> h.putInt(8, 1).putLong(24, 4));
        assertThatThrownBy(() -> LayeredBackend.open(image, List.of(), false))
                .isInstanceOf(IOException.class).hasMessageContaining("unknown flags");
        rewriteHeader(image, h -> h.putLong(24, 0).putLong(48, 4096));
        assertThatThrownBy(() -> LayeredBackend.open(image, List.of(), false))
                .isInstanceOf(IOException.class).hasMessageContaining("do not match");
    }

    @Test
    void reservedMapStateAndTruncationAreRefused() throws IOException {
        Path image = dir.resolve("top.img");
        OverlayImage.create(image, 8 * MIB);
        patch(image, 4096 + 3, (byte) 0x30); // cluster 14: state 3
        assertThatThrownBy(() -> LayeredBackend.open(image, List.of(), false))
                .isInstanceOf(IOException.class).hasMessageContaining("corrupt cluster map");

        patch(image, 4096 + 3, (byte) 0);
        patch(image, 4096 + 100, (byte) 1); // past the 128 clusters of 8 MiB
        assertThatThrownBy(() -> LayeredBackend.open(image, List.of(), false))
                .isInstanceOf(IOException.class).hasMessageContaining("past the last cluster");

        patch(image, 4096 + 100, (byte) 0);
        try (FileChannel channel = FileChannel.open(image, StandardOpenOption.WRITE)) {
            channel.truncate(6000);
        }
        assertThatThrownBy(() -> LayeredBackend.open(image, List.of(), false))
                .isInstanceOf(IOException.class).hasMessageContaining("truncated");
    }

    /**
     * Two writers change clusters in one map block; the first is paused between taking the
     * block's bytes and writing them. The second writer's persistMap (or a FLUSH) must not
     * return until the block on disk carries its change: returning earlier lets the request be
     * acknowledged, and flushed, while the cluster map on disk still says UNALLOCATED.
     */
    @ParameterizedTest
    @ValueSource(strings = {"persistMap", "flush"})
    void mapChangeIsOnDiskWhenPersistReturnsEvenWhileAnotherWriterHoldsTheBlock(String how) throws Exception {
        Path image = dir.resolve("top.img");
        OverlayImage.create(image, 4 * MIB, 4096);
        try (OverlayImage overlay = OverlayImage.open(image, false);
                ExecutorService threads = Executors.newFixedThreadPool(2)) {
            CountDownLatch firstPaused = new CountDownLatch(1);
            CountDownLatch releaseFirst = new CountDownLatch(1);
            Thread first = Thread.currentThread();
            overlay.beforeMapBlockWrite(block -> {
                if (firstPaused.getCount() > 0 && Thread.currentThread() != first) {
                    firstPaused.countDown();
                    await(releaseFirst);
                }
            });
            overlay.setState(7, 8, OverlayImage.DATA);   // the second writer's change
            overlay.setState(5, 6, OverlayImage.DATA);   // the first writer's change, same block
            Future<?> firstWriter = threads.submit(() -> { overlay.persistMap(5, 6); return null; });
            assertThat(firstPaused.await(10, TimeUnit.SECONDS)).isTrue();

            Future<?> secondWriter = threads.submit(() -> {
                if (how.equals("flush")) {
                    overlay.flush();
                } else {
                    overlay.persistMap(7, 8);
                }
                // What a crash right after the acknowledgement would find on disk.
                return clusterStateOnDisk(image, 7);
            });
            try {
                Object found = secondWriter.get(500, TimeUnit.MILLISECONDS);
                assertThat(found).as("cluster 7 on disk when %s returned", how).isEqualTo(OverlayImage.DATA);
            } catch (TimeoutException expected) {
                // Waiting for the first writer's block write is right; it must then see its change on disk.
            } finally {
                releaseFirst.countDown();
            }
            assertThat(secondWriter.get(10, TimeUnit.SECONDS)).isEqualTo(OverlayImage.DATA);
            firstWriter.get(10, TimeUnit.SECONDS);
            assertThat(clusterStateOnDisk(image, 5)).isEqualTo(OverlayImage.DATA);
        }
    }

    private static int clusterStateOnDisk(Path image, int cluster) throws IOException {
        ByteBuffer map = readBytes(image, 4096, 4096);
        return (map.get(cluster / 4) >>> (2 * (cluster % 4))) & 3;
    }

    private static void await(CountDownLatch latch) {
        try {
            if (!latch.await(10, TimeUnit.SECONDS)) {
                throw new IllegalStateException("test latch not released");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    static ByteBuffer readBytes(Path file, long offset, int length) throws IOException {
        ByteBuffer buffer = ByteBuffer.allocate(length);
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            while (buffer.hasRemaining()) {
                if (channel.read(buffer, offset + buffer.position()) < 0) {
                    break;
                }
            }
        }
        return buffer.flip().order(ByteOrder.LITTLE_ENDIAN);
    }

    private static void patch(Path file, long offset, byte value) throws IOException {
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.WRITE)) {
            channel.write(ByteBuffer.wrap(new byte[] {value}), offset);
        }
    }

    private interface HeaderEdit {
        void apply(ByteBuffer header);
    }

    /** Changes header fields and recomputes the CRC, so only the semantic checks can object. */
    private static void rewriteHeader(Path file, HeaderEdit edit) throws IOException {
        ByteBuffer header = readBytes(file, 0, 4096);
        edit.apply(header);
        CRC32C crc = new CRC32C();
        crc.update(header.array(), 0, 4092);
        header.putInt(4092, (int) crc.getValue());
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.WRITE)) {
            channel.write(header.position(0), 0);
        }
    }
}
