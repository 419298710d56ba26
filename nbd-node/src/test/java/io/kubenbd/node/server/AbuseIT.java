package io.kubenbd.node.server;

import io.grpc.ManagedChannel;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.GetStatisticsRequest;
import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.testing.RawNbd;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The packaged server, started with the JVM flags the operator gives it, under a flood of
 * clients that never read: 100 that send options as fast as the socket takes them, 100 in
 * transmission that pipeline reads (80 of 32 MiB, 20 of 4 KiB). Meanwhile a well-behaved
 * client keeps reading and reconnecting. Its latency, the server's resident memory
 * ({@code VmRSS}) and netty's direct memory (control API) are printed and bounded.
 */
class AbuseIT {
    /** As the operator starts server pods (operator ServerSettings.DEFAULT_JAVA_OPTIONS). */
    private static final List<String> JVM = List.of("-XX:+UseSerialGC", "-Xms8m", "-Xmx256m",
            "-XX:MaxDirectMemorySize=1g");
    /**
     * Direct memory: the buffer budget (half of MaxDirectMemorySize, 512 MiB) holds all request
     * and reply data; connections add only small buffers. RSS: that plus the JVM (about 90 MiB
     * idle) and what of the 256 MiB heap the flood uses. Without the limits the server went past
     * both within seconds, and the good client's reads timed out.
     */
    private static final long RSS_BOUND_MIB = 640;
    private static final long DIRECT_BOUND_MIB = 512;
    private static final Duration FLOOD = Duration.ofSeconds(20);
    private static final int OPTION_FLOODERS = 100;
    private static final int READ_FLOODERS = 100;
    private static final int SMALL_READ_FLOODERS = 20;
    private static final long SIZE = 1L << 30;

    @Test
    void aFloodOfClientsThatNeverReadLeavesTheServerBoundedAndAGoodClientWorking() throws Exception {
        try (ScratchDir scratch = ScratchDir.create("kube-nbd-abuse-")) {
            Path image = scratch.sparseFile("disk.img", SIZE);
            Path control = scratch.resolve("control.sock");
            try (ServerProcess server = ServerProcess.nbdNodeWith(JVM, port -> List.of("--bind", "127.0.0.1",
                    "--port", String.valueOf(port), "--export", "disk=" + image + ",max-connections=128",
                    "--control", "unix:" + control))) {
                flood(server, control);
            }
        }
    }

    private void flood(ServerProcess server, Path control) throws Exception {
        long pid = server.process().pid();
        EpollEventLoopGroup group = new EpollEventLoopGroup(1);
        ManagedChannel grpc = NettyChannelBuilder.forAddress(new DomainSocketAddress(control.toFile()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(group).usePlaintext().build();
        ExecutorService threads = Executors.newFixedThreadPool(3);
        List<Flooder> flooders = new ArrayList<>();
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong rssPeak = new AtomicLong();
        AtomicLong directPeak = new AtomicLong(-1);
        NbdClient good = null;
        try {
            good = goodClient(server);
            ExportControlGrpc.ExportControlBlockingStub stub = ExportControlGrpc.newBlockingStub(grpc);
            Future<?> sampler = threads.submit(() -> sample(pid, stub, stop, rssPeak, directPeak));

            for (int i = 0; i < OPTION_FLOODERS; i++) {
                flooders.add(Flooder.options(server.port(), InetAddress.getByName("127.0.0." + (2 + i % 4))));
            }
            for (int i = 0; i < READ_FLOODERS; i++) {
                int length = i < SMALL_READ_FLOODERS ? 4096 : 32 << 20;
                flooders.add(Flooder.reads(server.port(), InetAddress.getByName("127.0.0." + (6 + i % 4)), length));
            }
            long floodEnd = System.nanoTime() + FLOOD.toNanos();
            Future<long[]> floodStats = threads.submit(() -> pump(flooders, floodEnd));

            Latencies reads = new Latencies();
            Latencies connects = new Latencies();
            Random random = new Random(12);
            long nextConnect = System.nanoTime();
            while (System.nanoTime() < floodEnd) {
                long offset = (random.nextLong(SIZE / 4096)) * 4096;
                long start = System.nanoTime();
                try {
                    if (good == null) {
                        good = goodClient(server);
                    }
                    good.read(offset, 4096);
                    reads.add(System.nanoTime() - start);
                } catch (IOException e) {
                    reads.fail(e);
                    closeQuietly(good); // its replies may be out of step now: a new connection
                    good = null;
                }
                if (System.nanoTime() >= nextConnect) {
                    nextConnect = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(500);
                    long t = System.nanoTime();
                    try (NbdClient fresh = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(10))) {
                        fresh.go("disk");
                        fresh.read(offset, 4096);
                        connects.add(System.nanoTime() - t);
                    } catch (IOException e) {
                        connects.fail(e);
                    }
                }
            }
            long[] pumped = floodStats.get(30, TimeUnit.SECONDS);
            for (Flooder f : flooders) {
                f.close();
            }
            boolean alive = server.process().isAlive();
            byte[] after = null;
            if (alive) {
                try (NbdClient fresh = goodClient(server)) {
                    after = fresh.read(0, 4096);
                } catch (IOException e) {
                    System.out.println("AbuseIT: read after the flood failed: " + e);
                }
            }
            stop.set(true);
            sampler.get(10, TimeUnit.SECONDS);

            System.out.printf("AbuseIT: %d option flooders + %d read flooders (%d of 32 MiB) for %d s sent %d MiB,"
                            + " %d (re)connects; server alive %s%n", OPTION_FLOODERS, READ_FLOODERS,
                    READ_FLOODERS - SMALL_READ_FLOODERS, FLOOD.toSeconds(), pumped[0] >> 20, pumped[1], alive);
            System.out.printf("AbuseIT: server RSS peak %d MiB (bound %d), netty direct memory peak %s (bound %d MiB)%n",
                    rssPeak.get() >> 20, RSS_BOUND_MIB,
                    directPeak.get() < 0 ? "unknown" : (directPeak.get() >> 20) + " MiB", DIRECT_BOUND_MIB);
            System.out.println("AbuseIT: good client 4 KiB reads: " + reads);
            System.out.println("AbuseIT: good client connect+go+read: " + connects);
            String log = server.log();
            System.out.println("AbuseIT: server log lines: " + log.lines().count() + "; notable:");
            log.lines().filter(l -> !l.contains("transmission:") && !l.contains("closed after")
                            && !l.contains("handshake not finished")).limit(25)
                    .forEach(l -> System.out.println("AbuseIT:   " + l));

            assertThat(alive).as("server still running").isTrue();
            assertThat(after).as("the good client reads after the flood").hasSize(4096);
            assertThat(reads.failures).as("good client's failed reads; first: " + reads.firstFailure).isZero();
            assertThat(connects.failures).as("good client's failed connects; first: " + connects.firstFailure).isZero();
            assertThat(rssPeak.get() >> 20).as("server RSS peak, MiB").isLessThan(RSS_BOUND_MIB);
            assertThat(directPeak.get() >> 20).as("netty direct memory peak, MiB").isLessThan(DIRECT_BOUND_MIB);
            assertThat(reads.percentile(0.99)).as("good client's p99 read latency, ms").isLessThan(1000);
            // Before the limits its first read timed out (10 s) and no read succeeded during the flood.
            assertThat(reads.percentile(1.0)).as("good client's slowest read, ms").isLessThan(8000);
            assertThat(connects.percentile(1.0)).as("good client's slowest connect+read, ms").isLessThan(8000);
        } finally {
            closeQuietly(good);
            stop.set(true);
            for (Flooder f : flooders) {
                f.close();
            }
            threads.shutdownNow();
            threads.awaitTermination(10, TimeUnit.SECONDS);
            grpc.shutdownNow();
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        }
    }

    private static NbdClient goodClient(ServerProcess server) throws IOException {
        NbdClient client = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(10));
        try {
            client.go("disk");
            return client;
        } catch (IOException | RuntimeException e) {
            client.close();
            throw e;
        }
    }

    private static void closeQuietly(NbdClient client) {
        if (client != null) {
            try {
                client.close();
            } catch (IOException e) {
                // a broken connection being dropped
            }
        }
    }

    private static Void sample(long pid, ExportControlGrpc.ExportControlBlockingStub stub, AtomicBoolean stop,
                               AtomicLong rssPeak, AtomicLong directPeak) throws InterruptedException {
        Path status = Path.of("/proc/" + pid + "/status");
        long deadline = System.nanoTime() + FLOOD.toNanos() + TimeUnit.SECONDS.toNanos(60);
        int round = 0;
        while (!stop.get() && System.nanoTime() < deadline) {
            try {
                for (String line : Files.readAllLines(status)) {
                    if (line.startsWith("VmRSS:")) {
                        long kib = Long.parseLong(line.replaceAll("[^0-9]", ""));
                        rssPeak.accumulateAndGet(kib << 10, Math::max);
                    }
                }
            } catch (IOException e) {
                return null; // the process is gone; the test reports that
            }
            if (round++ % 3 == 0) {
                try {
                    long direct = stub.withDeadlineAfter(2, TimeUnit.SECONDS)
                            .getStatistics(GetStatisticsRequest.newBuilder().setExport("disk").build())
                            .getServerDirectMemory();
                    directPeak.accumulateAndGet(direct, Math::max);
                } catch (RuntimeException e) {
                    // a slow answer under load is not a figure; RSS covers the memory anyway
                }
            }
            Thread.sleep(150);
        }
        return null;
    }

    /** Writes to every flooder what its socket takes, reconnecting closed ones; returns bytes sent and connects. */
    private static long[] pump(List<Flooder> flooders, long end) throws InterruptedException {
        long sent = 0;
        long connects = flooders.size();
        while (System.nanoTime() < end) {
            long pass = 0;
            for (Flooder f : flooders) {
                try {
                    pass += f.push();
                } catch (IOException e) {
                    f.close();
                    try {
                        f.reconnect();
                        connects++;
                    } catch (IOException again) {
                        // the server refused it; it is tried again next pass
                    }
                }
            }
            sent += pass;
            // Real attackers run elsewhere; here the flood shares two cores with the server.
            Thread.sleep(10);
        }
        return new long[] {sent, connects};
    }

    /** A client that writes and never reads. */
    private static final class Flooder {
        private final int port;
        private final InetAddress local;
        private final int readLength; // 0: option flooder
        private SocketChannel channel;
        private ByteBuffer pending;

        private Flooder(int port, InetAddress local, int readLength) {
            this.port = port;
            this.local = local;
            this.readLength = readLength;
        }

        static Flooder options(int port, InetAddress local) throws IOException {
            Flooder f = new Flooder(port, local, 0);
            f.reconnect();
            return f;
        }

        static Flooder reads(int port, InetAddress local, int length) throws IOException {
            Flooder f = new Flooder(port, local, length);
            f.reconnect();
            return f;
        }

        void reconnect() throws IOException {
            SocketChannel ch = SocketChannel.open();
            try {
                ch.setOption(StandardSocketOptions.SO_RCVBUF, 4096);
                ch.bind(new InetSocketAddress(local, 0));
                ch.socket().connect(new InetSocketAddress("127.0.0.1", port), 5000);
                ch.socket().setSoTimeout(5000);
                if (readLength > 0) {
                    exportName(ch);
                }
                ch.configureBlocking(false);
            } catch (IOException | RuntimeException e) {
                ch.close();
                throw e;
            }
            channel = ch;
            pending = readLength > 0 ? reads(readLength) : options();
        }

        /** Writes what the socket takes now; the stream restarts at a message boundary when all went out. */
        long push() throws IOException {
            if (channel == null) {
                reconnect();
            }
            int written = channel.write(pending);
            if (!pending.hasRemaining()) {
                pending.rewind();
                if (readLength == 0 && pending.getInt(0) == 3) {
                    pending.position(4); // the client flags only once
                }
            }
            return written;
        }

        void close() {
            if (channel != null) {
                try {
                    channel.close();
                } catch (IOException e) {
                    // closing a flooder's socket; nothing to do about it
                }
                channel = null;
            }
        }

        private static void exportName(SocketChannel ch) throws IOException {
            if (!RawNbd.greeted(ch.socket().getInputStream())) {
                throw new IOException("closed without a greeting");
            }
            RawNbd.exportName(ch.socket().getInputStream(), ch.socket().getOutputStream(), "disk");
        }

        /** Client flags, then NBD_OPT_INFO for "disk" over and over (each answered with four replies). */
        private static ByteBuffer options() {
            byte[] name = "disk".getBytes(StandardCharsets.UTF_8);
            int option = 16 + 4 + name.length + 2;
            ByteBuffer b = ByteBuffer.allocate(4 + 2000 * option);
            b.putInt(3);
            while (b.remaining() >= option) {
                b.putLong(Magic.IHAVEOPT).putInt(OptionType.INFO).putInt(4 + name.length + 2)
                        .putInt(name.length).put(name).putShort((short) 0);
            }
            return b.flip();
        }

        private static ByteBuffer reads(int length) {
            Random random = new Random(length);
            return RawNbd.reads(1000, length, i -> random.nextLong(SIZE / length) * length);
        }
    }

    /** Latencies of one kind of call, in milliseconds, and the failures among them. */
    private static final class Latencies {
        private final List<Long> nanos = new ArrayList<>();
        int failures;
        String firstFailure = "none";

        void add(long n) {
            nanos.add(n);
        }

        void fail(Exception e) {
            if (failures++ == 0) {
                firstFailure = e.toString();
            }
        }

        double percentile(double p) {
            if (nanos.isEmpty()) {
                return Double.MAX_VALUE;
            }
            long[] sorted = nanos.stream().mapToLong(Long::longValue).sorted().toArray();
            int index = (int) Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1);
            return sorted[Math.max(0, index)] / 1e6;
        }

        @Override
        public String toString() {
            if (nanos.isEmpty()) {
                return "0 ok, " + failures + " failed (first: " + firstFailure + ")";
            }
            return String.format("%d ok, %d failed, p50 %.2f ms, p99 %.2f ms, max %.2f ms", nanos.size(), failures,
                    percentile(0.5), percentile(0.99), percentile(1.0));
        }
    }
}
