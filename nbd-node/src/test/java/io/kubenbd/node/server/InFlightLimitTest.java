package io.kubenbd.node.server;

import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.storage.StorageBackend;
import io.kubenbd.node.testing.ForwardingBackend;
import io.kubenbd.node.testing.RawNbd;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * {@code --max-in-flight} holds where requests are dispatched: one TCP write of thousands of
 * pipelined requests, which arrives in a few large reads, never has more than the limit
 * running on the storage threads at once, and every request is still answered.
 */
class InFlightLimitTest {
    private static final long SIZE = 16L << 20;
    private static final int LIMIT = 4;
    private static final int REQUESTS = 5_000;
    private static final int LENGTH = 4096;

    @TempDir
    Path dir;

    @Test
    void fiveThousandPipelinedRequestsInOneWriteNeverExceedTheLimit() throws Exception {
        Path image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(SIZE);
        }
        ConcurrencyCountingBackend backend = new ConcurrencyCountingBackend(StorageBackend.open(image, false));
        Export export = new Export(new ExportConfig("disk", image, false, "", 1), backend, null, image);
        // Many more storage threads than the limit, so only the limit can keep concurrency down.
        ServerSettings settings = new ServerSettings(Duration.ofSeconds(5), 16, LIMIT, 64L << 20, Duration.ofSeconds(5));
        try (NbdServer server = NbdServer.start(new InetSocketAddress("127.0.0.1", 0),
                ExportRegistry.of(List.of(export)), settings);
             Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress("127.0.0.1", server.port()), 5000);
            socket.setSoTimeout(20_000);
            DataInputStream in = new DataInputStream(socket.getInputStream());
            DataOutputStream out = new DataOutputStream(socket.getOutputStream());
            assertThat(RawNbd.greeted(in)).isTrue();
            RawNbd.exportName(in, out, "disk");

            CompletableFuture<Integer> replies = CompletableFuture.supplyAsync(() -> readReplies(in));
            ByteBuffer burst = RawNbd.reads(REQUESTS, LENGTH, i -> (long) (i % 4096) * LENGTH);
            out.write(burst.array());
            out.flush();

            assertThat(replies.get(30, TimeUnit.SECONDS)).as("replies received").isEqualTo(REQUESTS);
            System.out.printf("InFlightLimitTest: %d pipelined reads, limit %d, peak concurrent storage reads %d%n",
                    REQUESTS, LIMIT, backend.peak.get());
            assertThat(backend.peak.get()).as("peak of reads running at once").isLessThanOrEqualTo(LIMIT);
        }
    }

    private static int readReplies(DataInputStream in) {
        byte[] data = new byte[LENGTH];
        try {
            for (int i = 0; i < REQUESTS; i++) {
                if (in.readInt() != Magic.SIMPLE_REPLY) {
                    throw new IllegalStateException("reply " + i + " has no simple reply magic");
                }
                int error = in.readInt();
                in.readLong();
                if (error != 0) {
                    throw new IllegalStateException("reply " + i + " failed with error " + error);
                }
                in.readFully(data);
            }
            return REQUESTS;
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** A file backend whose reads take a little while and count how many run at once. */
    private static final class ConcurrencyCountingBackend extends ForwardingBackend {
        private final AtomicInteger running = new AtomicInteger();
        final AtomicInteger peak = new AtomicInteger();

        ConcurrencyCountingBackend(StorageBackend file) {
            super(file);
        }

        @Override
        public void read(long offset, ByteBuffer dst) throws IOException {
            int now = running.incrementAndGet();
            peak.accumulateAndGet(now, Math::max);
            try {
                Thread.sleep(0, 200_000);
                file.read(offset, dst);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException(e);
            } finally {
                running.decrementAndGet();
            }
        }
    }
}
