package io.kubenbd.node.server;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.client.NbdCommandException;
import io.kubenbd.node.client.OptionRefusedException;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.HandshakeFlags;
import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.OptionReplyType;
import io.kubenbd.node.protocol.OptionRequest;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.RequestHeader;
import io.kubenbd.node.protocol.TransmissionFlags;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The server's handshake and transmission rules, seen from a client on a real loopback
 * socket: refusals the spec names, hard disconnects where it demands them, limits that
 * keep memory bounded, and the connection going on after every recoverable error.
 */
class NbdServerTest {
    private static final long SIZE = 64L << 20;
    private static final Duration TIMEOUT = Duration.ofSeconds(10);

    @TempDir
    Path dir;
    private Path image;
    private NbdServer server;

    @BeforeEach
    void start() throws Exception {
        image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(SIZE);
        }
        Path readOnlyImage = dir.resolve("ro.img");
        Files.write(readOnlyImage, new byte[1 << 20]);
        ServerSettings settings = new ServerSettings(Duration.ofSeconds(2), 4, 64, 64L << 20, Duration.ofSeconds(5));
        server = NbdServer.start(new InetSocketAddress("127.0.0.1", 0), ExportRegistry.open(List.of(
                new ExportConfig("disk", image, false, "test disk", 3),
                new ExportConfig("ro", readOnlyImage, true, "", 1))), settings);
    }

    @AfterEach
    void stop() {
        server.close();
    }

    private NbdClient connect() throws IOException {
        return NbdClient.connect("127.0.0.1", server.port(), TIMEOUT);
    }

    // ------------------------------------------------------------------ handshake

    @Test
    void listAndInfoDescribeEveryExport() throws Exception {
        try (NbdClient client = connect()) {
            assertThat(client.listExports()).containsExactly(new OptionReply.Server("disk", "test disk"),
                    new OptionReply.Server("ro", ""));
            var info = client.info("disk");
            assertThat(info.size()).isEqualTo(SIZE);
            assertThat(info.description()).isEqualTo("test disk");
            assertThat(info.maximumBlock()).isEqualTo(32 << 20);
            assertThat(info.hasFlag(TransmissionFlags.CAN_MULTI_CONN)).isTrue();
            assertThat(info.hasFlag(TransmissionFlags.SEND_DF)).as("DF needs structured replies").isFalse();
            var ro = client.info("ro");
            assertThat(ro.readOnly()).isTrue();
            assertThat(ro.hasFlag(TransmissionFlags.SEND_TRIM) || ro.hasFlag(TransmissionFlags.SEND_WRITE_ZEROES))
                    .isFalse();
            assertThat(ro.hasFlag(TransmissionFlags.CAN_MULTI_CONN)).as("max-connections=1").isFalse();
        }
    }

    @Test
    void refusedOptionsLeaveTheHandshakeUsable() throws Exception {
        try (NbdClient client = connect()) {
            assertRefused(client, new OptionRequest.StartTls(), OptionReplyType.ERR_POLICY);
            assertRefused(client, new OptionRequest.Info(false, "nope", List.of()), OptionReplyType.ERR_UNKNOWN);
            assertRefused(client, new OptionRequest.MetaContext(true, "disk", List.of("base:allocation")),
                    OptionReplyType.ERR_INVALID);
            assertRefused(client, new OptionRequest.Unsupported(42), OptionReplyType.ERR_UNSUP);
            assertThat(client.negotiateExtendedHeaders()).isTrue();
            assertRefused(client, new OptionRequest.ExtendedHeaders(), OptionReplyType.ERR_INVALID);
            assertRefused(client, new OptionRequest.StructuredReply(), OptionReplyType.ERR_EXT_HEADER_REQD);
            assertRefused(client, new OptionRequest.MetaContext(false, "nope", List.of()), OptionReplyType.ERR_UNKNOWN);
            assertThat(client.go("disk").size()).isEqualTo(SIZE);
            assertThat(client.read(0, 4096)).containsOnly(0);
        }
    }

    @Test
    void malformedAndOversizedOptionsAreAnsweredNotFatal() throws Exception {
        try (RawConnection raw = new RawConnection(server.port())) {
            raw.handshake(HandshakeFlags.CLIENT_FIXED_NEWSTYLE);
            raw.option(OptionType.LIST, new byte[3]);
            assertThat(raw.optionReplyType(OptionType.LIST)).isEqualTo(OptionReplyType.ERR_INVALID);
            // GO whose name length runs past the option data.
            raw.option(OptionType.GO, ByteBuffer.allocate(8).putInt(100).putShort((short) 0).array());
            assertThat(raw.optionReplyType(OptionType.GO)).isEqualTo(OptionReplyType.ERR_INVALID);
            // A 1 MiB option is skipped without being buffered and refused as too big.
            raw.option(OptionType.LIST_META_CONTEXT, new byte[1 << 20]);
            assertThat(raw.optionReplyType(OptionType.LIST_META_CONTEXT)).isEqualTo(OptionReplyType.ERR_TOO_BIG);
            // Still in the handshake: a LIST works.
            raw.option(OptionType.LIST, new byte[0]);
            assertThat(raw.optionReplyType(OptionType.LIST)).isEqualTo(OptionReplyType.SERVER);
        }
    }

    @Test
    void protocolViolationsInTheHandshakeHangUp() throws Exception {
        try (RawConnection raw = new RawConnection(server.port())) {
            raw.handshake(HandshakeFlags.CLIENT_FIXED_NEWSTYLE | (1 << 7));
            assertThat(raw.closedByServer()).as("unknown client flag").isTrue();
        }
        try (RawConnection raw = new RawConnection(server.port())) {
            raw.handshake(HandshakeFlags.CLIENT_FIXED_NEWSTYLE);
            raw.out.writeLong(0x1122334455667788L);
            raw.out.writeInt(OptionType.LIST);
            raw.out.writeInt(0);
            raw.out.flush();
            assertThat(raw.closedByServer()).as("option without IHAVEOPT").isTrue();
        }
        try (RawConnection raw = new RawConnection(server.port())) {
            raw.handshake(HandshakeFlags.CLIENT_FIXED_NEWSTYLE);
            raw.option(OptionType.EXPORT_NAME, "nope".getBytes());
            assertThat(raw.closedByServer()).as("EXPORT_NAME of an unknown export").isTrue();
        }
    }

    @Test
    void aClientThatStallsInTheHandshakeIsDropped() throws Exception {
        try (RawConnection raw = new RawConnection(server.port())) {
            long start = System.nanoTime();
            assertThat(raw.closedByServer()).isTrue();
            assertThat(Duration.ofNanos(System.nanoTime() - start)).isLessThan(Duration.ofSeconds(5));
        }
    }

    @Test
    void exportNameEntersTransmissionWithOrWithoutZeroPadding() throws Exception {
        for (int flags : new int[] {HandshakeFlags.CLIENT_FIXED_NEWSTYLE,
                HandshakeFlags.CLIENT_FIXED_NEWSTYLE | HandshakeFlags.CLIENT_NO_ZEROES}) {
            try (RawConnection raw = new RawConnection(server.port())) {
                raw.handshake(flags);
                raw.option(OptionType.EXPORT_NAME, "disk".getBytes());
                assertThat(raw.in.readLong()).isEqualTo(SIZE);
                int transmissionFlags = raw.in.readUnsignedShort();
                assertThat(transmissionFlags & TransmissionFlags.HAS_FLAGS).isNotZero();
                if ((flags & HandshakeFlags.CLIENT_NO_ZEROES) == 0) {
                    assertThat(raw.in.readNBytes(124)).containsOnly(0);
                }
                // A compact FLUSH; the simple reply proves we are in transmission.
                raw.out.writeInt(Magic.REQUEST);
                raw.out.writeShort(0);
                raw.out.writeShort(CommandType.FLUSH);
                raw.out.writeLong(77);
                raw.out.writeLong(0);
                raw.out.writeInt(0);
                raw.out.flush();
                assertThat(raw.in.readInt()).isEqualTo(Magic.SIMPLE_REPLY);
                assertThat(raw.in.readInt()).isZero();
                assertThat(raw.in.readLong()).isEqualTo(77);
            }
        }
    }

    @Test
    void metaContextQueriesFollowTheNamespaces() throws Exception {
        try (NbdClient client = connect()) {
            client.negotiateStructuredReplies();
            assertThat(names(client.listMetaContexts("disk", List.of())))
                    .containsExactly("base:allocation", "qemu:allocation-depth");
            assertThat(names(client.listMetaContexts("disk", List.of("base:")))).containsExactly("base:allocation");
            assertThat(names(client.listMetaContexts("disk", List.of("qemu:")))).containsExactly("qemu:allocation-depth");
            assertThat(names(client.listMetaContexts("disk", List.of("qemu:dirty-bitmap:")))).isEmpty();
            assertThat(names(client.listMetaContexts("disk", List.of("x-other:thing", "base:nothing")))).isEmpty();
            assertThat(client.setMetaContexts("disk", List.of("base:"))).as("wildcards select nothing").isEmpty();
            assertThat(client.setMetaContexts("disk", List.of("base:allocation", "base:allocation")))
                    .as("a repeated query selects once").hasSize(1);
            assertThat(client.setMetaContexts("disk", List.of("qemu:allocation-depth", "base:allocation")))
                    .as("ids as qemu-nbd numbers them, in id order")
                    .extracting(OptionReply.MetaContext::id).containsExactly(0, 1);
        }
    }

    @Test
    void contextsSetForAnotherExportDoNotCarryOver() throws Exception {
        try (NbdClient client = connect()) {
            client.negotiateStructuredReplies();
            assertThat(client.setMetaContexts("ro", List.of("base:allocation"))).hasSize(1);
            client.go("disk");
            assertThatThrownBy(() -> client.blockStatus(0, 4096, 0))
                    .isInstanceOfSatisfying(NbdCommandException.class, e -> assertThat(e.error()).isEqualTo(NbdError.EINVAL));
        }
    }

    @Test
    void connectionLimitRefusesGoWithAReason() throws Exception {
        try (NbdClient first = connect(); NbdClient second = connect()) {
            first.go("ro");
            assertThatThrownBy(() -> second.go("ro"))
                    .isInstanceOfSatisfying(OptionRefusedException.class,
                            e -> assertThat(e.replyType()).isEqualTo(OptionReplyType.ERR_POLICY))
                    .hasMessageContaining("maximum of 1 connections");
            first.disconnect();
            awaitConnections("ro", 0);
            assertThat(second.go("ro").readOnly()).as("the slot is free again").isTrue();
        }
    }

    // ------------------------------------------------------------------ transmission

    @Test
    void blockStatusPayloadWithoutNegotiatedContextsIsEinvalNotACrash() throws Exception {
        // qemu-nbd 10.0.2 aborts on exactly this sequence.
        try (NbdClient client = connect()) {
            client.negotiateExtendedHeaders();
            var info = client.go("disk");
            assertThat(info.hasFlag(TransmissionFlags.BLOCK_STATUS_PAYLOAD)).isFalse();
            byte[] payload = ByteBuffer.allocate(12).putLong(4096).putInt(0).array();
            Reply reply = client.call(CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN, 0, payload.length, payload);
            assertThat(reply.error()).isEqualTo(NbdError.EINVAL);
            assertThat(client.read(0, 512)).hasSize(512);
        }
    }

    @Test
    void anOversizedCompactWriteIsDrainedAndRefused() throws Exception {
        try (NbdClient client = connect()) {
            client.go("disk");
            int length = 40 << 20;
            Reply reply = client.call(CommandType.WRITE, 0, 0, length, new byte[length]);
            assertThat(reply.error()).isEqualTo(NbdError.EINVAL);
            client.write(4096, new byte[] {1, 2, 3}, 0);
            assertThat(Arrays.copyOf(client.read(4096, 3), 3)).containsExactly(1, 2, 3);
        }
    }

    @Test
    void anExtendedPayloadOverTheMaximumHangsUp() throws Exception {
        try (NbdClient client = connect()) {
            client.negotiateExtendedHeaders();
            client.go("disk");
            client.send(new RequestHeader(CommandFlags.PAYLOAD_LEN, CommandType.WRITE, 1, 0, 1L << 40), null);
            assertThatThrownBy(client::receive).isInstanceOf(IOException.class);
        }
    }

    @Test
    void pipelinedRequestsAllGetTheirOwnReplies() throws Exception {
        Random random = new Random(7);
        try (NbdClient client = connect()) {
            client.negotiateStructuredReplies();
            client.go("disk");
            Map<Long, byte[]> expected = new HashMap<>();
            for (int i = 0; i < 200; i++) {
                byte[] data = new byte[4096];
                random.nextBytes(data);
                long cookie = client.nextCookie();
                client.send(new RequestHeader(0, CommandType.WRITE, cookie, i * 4096L, data.length), data);
                expected.put(cookie, data);
            }
            for (int i = 0; i < 200; i++) {
                Reply reply = client.receive();
                assertThat(reply.error()).isNull();
                assertThat(expected.remove(reply.cookie())).as("reply for an outstanding cookie").isNotNull();
            }
            assertThat(expected).isEmpty();
        }
    }

    @Test
    void aFlushOnOneConnectionCoversWritesOfAnother() throws Exception {
        byte[] data = new byte[65536];
        new Random(3).nextBytes(data);
        try (NbdClient writer = connect(); NbdClient flusher = connect(); NbdClient reader = connect()) {
            writer.go("disk");
            flusher.go("disk");
            reader.go("disk");
            writer.write(1 << 20, data, 0);
            flusher.flush();
            assertThat(reader.read(1 << 20, data.length)).isEqualTo(data);
        }
        byte[] onDisk = new byte[data.length];
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "r")) {
            f.seek(1 << 20);
            f.readFully(onDisk);
        }
        assertThat(onDisk).isEqualTo(data);
    }

    @Test
    void readOnlyExportsRefuseWritesWithEinval() throws Exception {
        try (NbdClient client = connect()) {
            client.go("ro");
            assertThatThrownBy(() -> client.write(0, new byte[512], 0))
                    .isInstanceOfSatisfying(NbdCommandException.class, e -> assertThat(e.error()).isEqualTo(NbdError.EINVAL));
            assertThat(client.call(CommandType.TRIM, 0, 0, 512, null).error()).isEqualTo(NbdError.EINVAL);
            assertThat(client.read(0, 512)).hasSize(512);
        }
    }

    @Test
    void disconnectClosesAfterInFlightRequestsComplete() throws Exception {
        try (NbdClient client = connect()) {
            client.go("disk");
            long cookie = client.nextCookie();
            client.send(new RequestHeader(0, CommandType.READ, cookie, 0, 1 << 20), null);
            client.send(new RequestHeader(0, CommandType.DISC, client.nextCookie(), 0, 0), null);
            assertThat(client.receive().cookie()).isEqualTo(cookie);
            assertThatThrownBy(client::receive).isInstanceOf(IOException.class);
        }
    }

    // ------------------------------------------------------------------ helpers

    private static List<String> names(List<OptionReply.MetaContext> contexts) {
        return contexts.stream().map(OptionReply.MetaContext::name).toList();
    }

    private static void assertRefused(NbdClient client, OptionRequest request, int replyType) throws IOException {
        OptionReply last = client.option(request).getLast();
        assertThat(last).isInstanceOfSatisfying(OptionReply.Error.class,
                e -> assertThat(OptionReplyType.name(e.type())).isEqualTo(OptionReplyType.name(replyType)));
    }

    private void awaitConnections(String export, int count) throws InterruptedException {
        for (int i = 0; i < 100; i++) {
            if (server.activeConnections(export) == count) {
                return;
            }
            Thread.sleep(20);
        }
        throw new AssertionError("export " + export + " still has " + server.activeConnections(export) + " connections");
    }

    /** A socket driven byte by byte, for what a well-behaved client would never send. */
    private static final class RawConnection implements AutoCloseable {
        private final Socket socket;
        final DataInputStream in;
        final DataOutputStream out;

        RawConnection(int port) throws IOException {
            socket = new Socket("127.0.0.1", port);
            socket.setSoTimeout(5000);
            in = new DataInputStream(socket.getInputStream());
            out = new DataOutputStream(socket.getOutputStream());
            assertThat(in.readLong()).isEqualTo(Magic.NBDMAGIC);
            assertThat(in.readLong()).isEqualTo(Magic.IHAVEOPT);
            in.readUnsignedShort();
        }

        void handshake(int clientFlags) throws IOException {
            out.writeInt(clientFlags);
            out.flush();
        }

        void option(int option, byte[] data) throws IOException {
            out.writeLong(Magic.IHAVEOPT);
            out.writeInt(option);
            out.writeInt(data.length);
            out.write(data);
            out.flush();
        }

        /** Reads one option reply and returns its type, skipping its payload. */
        int optionReplyType(int option) throws IOException {
            assertThat(in.readLong()).isEqualTo(Magic.OPTION_REPLY);
            assertThat(in.readInt()).isEqualTo(option);
            int type = in.readInt();
            in.skipNBytes(Integer.toUnsignedLong(in.readInt()));
            return type;
        }

        boolean closedByServer() throws IOException {
            try {
                return in.read() == -1;
            } catch (SocketTimeoutException e) {
                return false;
            } catch (IOException e) {
                return true; // reset
            }
        }

        @Override
        public void close() throws IOException {
            socket.close();
        }
    }
}
