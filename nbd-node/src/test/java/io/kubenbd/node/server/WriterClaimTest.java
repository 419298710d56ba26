package io.kubenbd.node.server;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.client.NbdCommandException;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.Reply;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The single-writer claim: a consumer that mounts a filesystem from an export (the CSI node
 * plugin, for a single-node read-write volume) claims it with a zero-length WRITE, and while
 * it holds the claim no other host may change the export, so a second node that mounts the
 * same ext4 by mistake cannot corrupt it. Two nodes are two loopback source addresses here.
 */
class WriterClaimTest {
    private static final long SIZE = 8L << 20;
    private static final Duration TIMEOUT = Duration.ofSeconds(10);
    private static final InetAddress NODE_A = address("127.0.0.1");
    private static final InetAddress NODE_B = address("127.0.0.2");

    @TempDir
    Path dir;
    private NbdServer server;
    private ExportRegistry exports;

    @BeforeEach
    void start() throws Exception {
        Path image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(SIZE);
        }
        ServerSettings settings = new ServerSettings(Duration.ofSeconds(2), 2, 16, 64L << 20, Duration.ofSeconds(5));
        exports = ExportRegistry.open(List.of(new ExportConfig("disk", image, false, "", 8)));
        server = NbdServer.start(new InetSocketAddress("127.0.0.1", 0), exports, settings);
    }

    @AfterEach
    void stop() {
        server.close();
    }

    @Test
    void whileOneHostHoldsTheClaimNoOtherHostChangesTheExport() throws Exception {
        byte[] data = pattern(0x5a);
        try (NbdClient a1 = connect(NODE_A); NbdClient a2 = connect(NODE_A); NbdClient b = connect(NODE_B)) {
            assertThat(exports.find("disk").orElseThrow().writer()).isEmpty();
            claim(a1);
            assertThat(exports.find("disk").orElseThrow().writer()).contains(NODE_A);
            a1.write(0, data, 0);
            // The same host's other connections (multi-conn) write, claimed or not.
            claim(a2);
            a2.write(4096, data, CommandFlags.FUA);

            assertThatThrownBy(() -> claim(b)).isInstanceOfSatisfying(NbdCommandException.class, e -> {
                assertThat(e.error()).isEqualTo(NbdError.EPERM);
                assertThat(e.getMessage()).contains("127.0.0.1").contains("another");
            });
            for (int type : new int[] {CommandType.WRITE, CommandType.TRIM, CommandType.WRITE_ZEROES}) {
                Reply reply = b.call(type, 0, 0, 4096, type == CommandType.WRITE ? pattern(0x66) : null);
                assertThat(reply.error()).as("%s from the other host", CommandType.name(type)).isEqualTo(NbdError.EPERM);
            }
            // Reading (a backup) and flushing stay open to everyone; the holder's data are untouched.
            assertThat(b.read(0, 4096)).isEqualTo(data);
            b.flush();
            assertThat(a1.read(0, 8192)).isEqualTo(concat(data, data));
        }
    }

    @Test
    void claimEndsWhenTheHoldersLastClaimingConnectionCloses() throws Exception {
        try (NbdClient b = connect(NODE_B)) {
            NbdClient a1 = connect(NODE_A);
            NbdClient a2 = connect(NODE_A);
            claim(a1);
            claim(a2);
            a1.close();
            // a2 still holds it for node A.
            assertThat(b.call(CommandType.WRITE, 0, 0, 4096, pattern(1)).error()).isEqualTo(NbdError.EPERM);
            a2.close();
            awaitClaimable(b);
            b.write(0, pattern(2), 0);
            assertThat(b.read(0, 4096)).isEqualTo(pattern(2));
        }
    }

    @Test
    void withoutAClaimWritersFromSeveralHostsAreServed() throws Exception {
        // Multi-writer use (a VM's live migration, a restore) claims nothing and is not limited.
        try (NbdClient a = connect(NODE_A); NbdClient b = connect(NODE_B)) {
            a.write(0, pattern(3), 0);
            b.write(4096, pattern(4), 0);
            assertThat(a.read(4096, 4096)).isEqualTo(pattern(4));
        }
    }

    private void awaitClaimable(NbdClient client) throws Exception {
        long deadline = System.nanoTime() + TIMEOUT.toNanos();
        while (true) {
            try {
                claim(client);
                return;
            } catch (NbdCommandException e) {
                // The server learns of the close asynchronously.
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(20);
            }
        }
    }

    private static void claim(NbdClient client) throws IOException {
        client.write(0, new byte[0], 0);
    }

    private NbdClient connect(InetAddress from) throws IOException {
        NbdClient client = NbdClient.connect("127.0.0.1", server.port(), from, TIMEOUT);
        client.negotiateBestReplies();
        client.go("disk");
        return client;
    }

    private static byte[] pattern(int value) {
        byte[] data = new byte[4096];
        Arrays.fill(data, (byte) value);
        return data;
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] both = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, both, a.length, b.length);
        return both;
    }

    private static InetAddress address(String literal) {
        try {
            return InetAddress.getByName(literal);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }
}
