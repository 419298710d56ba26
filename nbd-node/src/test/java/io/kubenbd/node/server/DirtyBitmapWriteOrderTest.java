package io.kubenbd.node.server;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.storage.DirtyBitmapSet;
import io.kubenbd.node.storage.DirtyRun;
import io.kubenbd.node.storage.StorageBackend;
import io.kubenbd.node.testing.ForwardingBackend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The incremental-backup guarantee at its most delicate moment: a checkpoint taken while a
 * write is under way. The backup of the frozen bitmap may read the range before the write
 * lands, so the write must then be in the bitmap that goes on recording; a backup chain that
 * copies the frozen bitmap now and the new one next time misses nothing.
 */
class DirtyBitmapWriteOrderTest {
    private static final int SIZE = 4 << 20;
    private static final int GRANULE = 64 << 10;
    private static final long OFFSET = 5L * GRANULE;

    @TempDir
    Path dir;

    @Test
    void writeUnderWayDuringCheckpointIsInTheBitmapThatGoesOnRecording() throws Exception {
        Path image = dir.resolve("disk.img");
        byte[] before = new byte[SIZE];
        Arrays.fill(before, (byte) 0x11);
        Files.write(image, before);
        byte[] written = new byte[GRANULE];
        Arrays.fill(written, (byte) 0x22);

        CountDownLatch writeStarted = new CountDownLatch(1);
        CountDownLatch letWriteLand = new CountDownLatch(1);
        StorageBackend file = StorageBackend.open(image, false);
        StorageBackend paused = new PausedWriteBackend(file, writeStarted, letWriteLand);
        DirtyBitmapSet bitmaps = DirtyBitmapSet.open(image, SIZE);
        bitmaps.add("full", GRANULE);
        Export export = new Export(new ExportConfig("disk", image, false, "", 2), paused, bitmaps, image);
        ServerSettings settings = new ServerSettings(Duration.ofSeconds(5), 2, 16, 64L << 20, Duration.ofSeconds(5));
        try (NbdServer server = NbdServer.start(new InetSocketAddress("127.0.0.1", 0), ExportRegistry.of(List.of(export)), settings);
                NbdClient client = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(10))) {
            client.negotiateBestReplies();
            client.go("disk");
            CompletableFuture<Void> write = CompletableFuture.runAsync(() -> {
                try {
                    client.write(OFFSET, written, 0);
                } catch (IOException e) {
                    throw new IllegalStateException(e);
                }
            });
            byte[] backupOfRange = null;
            try {
                assertThat(writeStarted.await(10, TimeUnit.SECONDS)).as("the write reached the backend").isTrue();

                // The backup: freeze "full", start "inc1", copy what "full" says is dirty.
                bitmaps.checkpoint("full", "inc1", GRANULE);
                if (dirty(bitmaps, "full", OFFSET)) {
                    ByteBuffer copy = ByteBuffer.allocate(GRANULE);
                    file.read(OFFSET, copy); // the data as they are now: the write has not landed
                    backupOfRange = copy.array();
                }
            } finally {
                letWriteLand.countDown();
            }
            write.get(10, TimeUnit.SECONDS);

            boolean inThisBackup = backupOfRange != null && Arrays.equals(backupOfRange, written);
            boolean inNextIncrement = dirty(bitmaps, "inc1", OFFSET);
            assertThat(inThisBackup || inNextIncrement)
                    .as("the acknowledged write is in the backup of the frozen bitmap (%s) or in the next increment (%s)",
                            backupOfRange == null ? "range not dirty" : "copied before the write landed", inNextIncrement)
                    .isTrue();
        }
    }

    private static boolean dirty(DirtyBitmapSet bitmaps, String name, long offset) {
        List<DirtyRun> runs = bitmaps.runs(name, offset, GRANULE, 1);
        return runs.getFirst().dirty();
    }

    /** A file backend whose writes wait, after they were asked for and before the data land, until released. */
    private static final class PausedWriteBackend extends ForwardingBackend {
        private final CountDownLatch started;
        private final CountDownLatch release;

        PausedWriteBackend(StorageBackend file, CountDownLatch started, CountDownLatch release) {
            super(file);
            this.started = started;
            this.release = release;
        }

        @Override
        public void write(long offset, ByteBuffer src) throws IOException {
            started.countDown();
            try {
                if (!release.await(10, TimeUnit.SECONDS)) {
                    throw new IOException("test never released the write");
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException(e);
            }
            file.write(offset, src);
        }
    }
}
