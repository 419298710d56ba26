package io.kubenbd.node.server;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.RequestHeader;
import io.kubenbd.node.testing.RawNbd;
import io.kubenbd.node.tls.ClientTlsCredentials;
import io.kubenbd.node.tls.ServerTls;
import io.kubenbd.node.tls.ServerTlsCredentials;
import io.kubenbd.node.tls.TlsMode;
import io.netty.util.internal.PlatformDependent;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BooleanSupplier;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * What bounds the server's memory against clients that send without reading, on real
 * loopback sockets: handshake caps per server and per peer address, option replies that stop
 * at a full socket, the shared buffer budget with room for a well-behaved client, and the
 * write and idle timeouts.
 */
class ServerLimitsTest {
    private static final long SIZE = 256L << 20;

    @TempDir
    Path dir;
    private NbdServer server;
    private final List<Socket> sockets = new ArrayList<>();

    private void start(ServerSettings settings) throws IOException, InterruptedException {
        Path image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(SIZE);
        }
        server = NbdServer.start(new InetSocketAddress("127.0.0.1", 0),
                ExportRegistry.open(List.of(new ExportConfig("disk", image, false, "", 16))), settings);
    }

    private static ServerSettings base() {
        return new ServerSettings(Duration.ofSeconds(10), 4, 64, 64L << 20, Duration.ofSeconds(5));
    }

    @AfterEach
    void stop() throws IOException {
        for (Socket s : sockets) {
            s.close();
        }
        if (server != null) {
            server.close();
        }
    }

    private Socket open(String local) throws IOException {
        Socket s = new Socket();
        sockets.add(s);
        s.setReceiveBufferSize(4096);
        s.bind(new InetSocketAddress(InetAddress.getByName(local), 0));
        s.connect(new InetSocketAddress("127.0.0.1", server.port()), 5000);
        s.setSoTimeout(5000);
        return s;
    }

    private static boolean greeted(Socket s) throws IOException {
        return RawNbd.greeted(s.getInputStream());
    }

    @Test
    void connectionsInTheHandshakeAreCappedPerPeerAddress() throws Exception {
        start(base().withHandshakeLimits(100, 3));
        for (int i = 0; i < 3; i++) {
            assertThat(greeted(open("127.0.0.1"))).as("handshake %d from 127.0.0.1", i + 1).isTrue();
        }
        assertThat(greeted(open("127.0.0.1"))).as("a fourth from the same address").isFalse();
        assertThat(greeted(open("127.0.0.2"))).as("another address").isTrue();

        // One of the three finishes its handshake: its place is free again.
        exportNameAfterGreeting(sockets.get(0));
        awaitTrue(() -> server.handshaking() == 3, "the finished handshake to leave the count");
        assertThat(greeted(open("127.0.0.1"))).as("after one entered transmission").isTrue();
    }

    @Test
    void connectionsInTheHandshakeAreCappedPerServer() throws Exception {
        start(base().withHandshakeLimits(2, 64));
        assertThat(greeted(open("127.0.0.1"))).isTrue();
        assertThat(greeted(open("127.0.0.2"))).isTrue();
        assertThat(greeted(open("127.0.0.3"))).as("a third handshake on the server").isFalse();
        sockets.get(0).close();
        awaitTrue(() -> server.handshaking() == 1, "the closed handshake to leave the count");
        assertThat(greeted(open("127.0.0.3"))).as("after one closed").isTrue();
    }

    @Test
    void optionsNobodyReadsStopBeingAnswered() throws Exception {
        start(base());
        Socket s = open("127.0.0.1");
        assertThat(greeted(s)).isTrue();
        byte[] name = "disk".getBytes(StandardCharsets.UTF_8);
        int option = 16 + 4 + name.length + 2;
        int count = 100_000;
        ByteBuffer options = ByteBuffer.allocate(4 + count * option).putInt(3);
        for (int i = 0; i < count; i++) {
            options.putLong(Magic.IHAVEOPT).putInt(OptionType.INFO).putInt(4 + name.length + 2)
                    .putInt(name.length).put(name).putShort((short) 0);
        }
        long before = PlatformDependent.usedDirectMemory();
        Thread writer = Thread.ofVirtual().start(() -> {
            try {
                s.getOutputStream().write(options.array()); // blocks once the server stops reading
            } catch (IOException e) {
                // the socket is closed at the end of the test
            }
        });
        long peak = 0;
        for (int i = 0; i < 30; i++) {
            Thread.sleep(50);
            peak = Math.max(peak, PlatformDependent.usedDirectMemory() - before);
        }
        System.out.printf("ServerLimitsTest: %d INFO options never read: server direct memory grew by %d KiB%n",
                count, peak >> 10);
        assertThat(peak).as("direct memory grown while answering options nobody reads").isLessThan(8L << 20);
        s.close();
        writer.join(5000);
    }

    @Test
    void clientsThatNeverReadShareTheBudgetAndLeaveRoomForOthers() throws Exception {
        start(base().withBufferBudget(8L << 20));
        for (int c = 0; c < 4; c++) {
            Socket s = open("127.0.0.2");
            exportName(s);
            s.getOutputStream().write(RawNbd.reads(32, 1 << 20, i -> (long) i << 20).array());
        }
        long peak = 0;
        try (NbdClient good = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(5))) {
            good.go("disk");
            long deadline = System.nanoTime() + Duration.ofMillis(1500).toNanos();
            int reads = 0;
            while (System.nanoTime() < deadline) {
                peak = Math.max(peak, server.bufferedBytes());
                assertThat(good.read((long) (reads % 1000) * 4096, 4096)).hasSize(4096);
                reads++;
            }
            System.out.printf("ServerLimitsTest: 4 clients pipelining 1 MiB reads unread, budget 8 MiB: peak held %d KiB,"
                    + " good client %d reads in 1.5 s%n", peak >> 10, reads);
            assertThat(reads).as("the good client's reads").isGreaterThan(10);
        }
        assertThat(peak).as("bytes held by all connections").isLessThanOrEqualTo(8L << 20);
    }

    @Test
    void aClientThatNeverReadsItsRepliesIsDisconnectedAfterTheWriteTimeout() throws Exception {
        start(base().withTimeouts(Duration.ofSeconds(1), Duration.ZERO));
        Socket s = open("127.0.0.1");
        exportName(s);
        s.getOutputStream().write(RawNbd.reads(64, 1 << 20, i -> (long) i << 20).array());
        awaitTrue(() -> server.bufferedBytes() > 0, "replies to be held");
        long start = System.nanoTime();
        awaitTrue(() -> server.activeConnections("disk") == 0, "the connection to be closed");
        System.out.printf("ServerLimitsTest: unread replies: connection closed %d ms after they were held%n",
                (System.nanoTime() - start) / 1_000_000);
        awaitTrue(() -> server.bufferedBytes() == 0, "its buffers to be freed");
    }

    @Test
    void aWriteWhosePayloadNeverComesIsDroppedAfterTheWriteTimeout() throws Exception {
        start(base().withTimeouts(Duration.ofSeconds(1), Duration.ZERO));
        Socket s = open("127.0.0.1");
        exportName(s);
        ByteBuffer write = ByteBuffer.allocate(28 + 100).putInt(Magic.REQUEST).putShort((short) 0)
                .putShort((short) CommandType.WRITE).putLong(1).putLong(0).putInt(1 << 20);
        s.getOutputStream().write(write.array()); // the header and 100 of its 1 MiB
        awaitTrue(() -> server.bufferedBytes() == 1 << 20, "the payload to be charged");
        awaitTrue(() -> server.activeConnections("disk") == 0, "the connection to be closed");
        awaitTrue(() -> server.bufferedBytes() == 0, "its charge to be freed");
    }

    @Test
    void aTlsPskClientThatNeverReadsIsDisconnectedAfterTheWriteTimeoutToo() throws Exception {
        Path keys = dir.resolve("keys.psk");
        java.nio.file.Files.writeString(keys, "alice:" + "0123456789abcdef".repeat(4) + "\n");
        Path image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(SIZE);
        }
        ServerTls tls = new ServerTls(TlsMode.REQUIRE, ServerTlsCredentials.Psk.fromFile(keys, message -> { }));
        server = NbdServer.start(new InetSocketAddress("127.0.0.1", 0),
                ExportRegistry.open(List.of(new ExportConfig("disk", image, false, "", 16))),
                base().withTimeouts(Duration.ofSeconds(1), Duration.ZERO), tls);
        try (NbdClient client = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(5))) {
            client.startTls(ClientTlsCredentials.Psk.fromFile(keys, "alice"));
            client.go("disk");
            for (int i = 0; i < 64; i++) {
                client.send(new RequestHeader(0, CommandType.READ, client.nextCookie(), (long) i << 20, 1 << 20), null);
            }
            awaitTrue(() -> server.bufferedBytes() > 0, "replies to be held");
            awaitTrue(() -> server.activeConnections("disk") == 0, "the TLS connection to be closed");
            awaitTrue(() -> server.bufferedBytes() == 0, "its buffers to be freed");
        }
    }

    @Test
    void anIdleConnectionIsClosedAfterTheIdleTimeoutAndABusyOneIsNot() throws Exception {
        start(base().withTimeouts(Duration.ofSeconds(60), Duration.ofSeconds(1)));
        try (NbdClient idle = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(5));
             NbdClient busy = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(5))) {
            idle.go("disk");
            busy.go("disk");
            idle.read(0, 4096);
            long end = System.nanoTime() + Duration.ofMillis(2500).toNanos();
            while (System.nanoTime() < end) {
                busy.read(0, 4096);
                Thread.sleep(200);
            }
            assertThat(server.activeConnections("disk")).as("only the busy connection is left").isEqualTo(1);
            assertThat(busy.read(0, 4096)).hasSize(4096);
        }
    }

    private static void exportName(Socket s) throws IOException {
        assertThat(greeted(s)).as("greeting").isTrue();
        exportNameAfterGreeting(s);
    }

    private static void exportNameAfterGreeting(Socket s) throws IOException {
        RawNbd.exportName(s.getInputStream(), s.getOutputStream(), "disk");
    }

    private static void awaitTrue(BooleanSupplier condition, String what) throws InterruptedException {
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting for " + what);
            }
            Thread.sleep(20);
        }
    }
}
