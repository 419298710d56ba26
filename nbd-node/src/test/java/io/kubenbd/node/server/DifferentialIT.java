package io.kubenbd.node.server;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.protocol.BlockDescriptor;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.ReplyChunk;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ServerProcess;
import io.netty.buffer.ByteBuf;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The same scripted request sequences against qemu-nbd 10 and {@code nbd-node serve}, each
 * on its own copy of one image: every reply (error code, read data, block status after
 * merging equal neighbours and cutting at the requested length) and the final image bytes
 * must be the same.
 */
class DifferentialIT {
    private static final long SIZE = 64L << 20;
    private static final String EXPORT = "diff";

    @TempDir
    Path dir;
    private Path qemuImage;
    private Path nodeImage;

    @BeforeEach
    void images() throws Exception {
        qemuImage = dir.resolve("qemu.img");
        nodeImage = dir.resolve("node.img");
        for (Path image : List.of(qemuImage, nodeImage)) {
            try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
                f.setLength(SIZE);
                writePattern(f, 1 << 20, 64 << 10, 0x11);
                writePattern(f, 8 << 20, 1 << 20, 0x22);
                writePattern(f, SIZE - 4096, 4096, 0x33);
            }
        }
    }

    @Test
    void structuredRepliesGiveTheSameAnswers() throws Exception {
        assertSameTranscripts(ReplyStyle.STRUCTURED, this::commonScript);
    }

    @Test
    void simpleRepliesGiveTheSameAnswers() throws Exception {
        assertSameTranscripts(ReplyStyle.SIMPLE, (c, t) -> {
            step(c, t, "read data", CommandType.READ, 0, (1 << 20) - 4096, 8192, null);
            step(c, t, "read past end", CommandType.READ, 0, SIZE - 512, 4096, null);
            step(c, t, "write", CommandType.WRITE, 0, 4096, 4096, pattern(4096, 0x44));
            step(c, t, "read back", CommandType.READ, 0, 4096, 4096, null);
            step(c, t, "block status without contexts", CommandType.BLOCK_STATUS, 0, 0, 4096, null);
            step(c, t, "trim", CommandType.TRIM, 0, 8 << 20, 4096, null);
            step(c, t, "flush", CommandType.FLUSH, 0, 0, 0, null);
        });
    }

    @Test
    void extendedHeadersAndBlockStatusPayloadGiveTheSameAnswers() throws Exception {
        assertSameTranscripts(ReplyStyle.EXTENDED, (c, t) -> {
            commonScript(c, t);
            int base = c.contextId();
            step(c, t, "64-bit effect length past end", CommandType.BLOCK_STATUS, 0, 0, 1L << 40, null);
            step(c, t, "write with PAYLOAD_LEN", CommandType.WRITE, CommandFlags.PAYLOAD_LEN, 2 << 20, 4096,
                    pattern(4096, 0x55));
            step(c, t, "read it back", CommandType.READ, 0, 2 << 20, 4096, null);
            step(c, t, "payload: the negotiated id", CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN, 0, 0,
                    statusPayload(SIZE, base));
            step(c, t, "payload: REQ_ONE", CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN | CommandFlags.REQ_ONE,
                    (1 << 20) - 4096, 0, statusPayload(1 << 20, base));
            step(c, t, "payload: duplicated id", CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN, 0, 0,
                    statusPayload(4096, base, base));
            step(c, t, "payload: unknown id", CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN, 0, 0,
                    statusPayload(4096, 999));
            // qemu-nbd -A offers qemu:allocation-depth as id 1; this connection did not select it.
            step(c, t, "payload: id not negotiated", CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN, 0, 0,
                    statusPayload(4096, base + 1));
            step(c, t, "payload: effect length past end", CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN,
                    SIZE - 4096, 0, statusPayload(8192, base));
            step(c, t, "payload: no ids", CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN, 0, 0,
                    statusPayload(4096));
            step(c, t, "payload: bad size", CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN, 0, 0, new byte[10]);
            step(c, t, "payload on READ", CommandType.READ, CommandFlags.PAYLOAD_LEN, 0, 0, new byte[16]);
            step(c, t, "still usable", CommandType.READ, 0, 8 << 20, 4096, null);
        });
    }

    // ------------------------------------------------------------------ scripts

    private void commonScript(Conn c, List<String> t) throws IOException {
        step(c, t, "read hole", CommandType.READ, 0, 0, 64 << 10, null);
        step(c, t, "read data/hole boundary", CommandType.READ, 0, (1 << 20) - 4096, 128 << 10, null);
        step(c, t, "read zero length", CommandType.READ, 0, 0, 0, null);
        step(c, t, "read past end", CommandType.READ, 0, SIZE - 512, 4096, null);
        step(c, t, "read offset beyond size", CommandType.READ, 0, SIZE + 4096, 512, null);
        step(c, t, "read DF", CommandType.READ, CommandFlags.DF, (1 << 20) - 4096, 16384, null);
        step(c, t, "read with a block-status flag", CommandType.READ, CommandFlags.REQ_ONE, 0, 4096, null);
        step(c, t, "read over 32 MiB", CommandType.READ, 0, 0, (32 << 20) + 4096, null);
        step(c, t, "unknown command", 99, 0, 0, 4096, null);
        step(c, t, "write", CommandType.WRITE, 0, 4 << 20, 8192, pattern(8192, 0x66));
        step(c, t, "write FUA", CommandType.WRITE, CommandFlags.FUA, (4 << 20) + 8192, 4096, pattern(4096, 0x67));
        step(c, t, "write unaligned", CommandType.WRITE, 0, (4 << 20) + 100, 300, pattern(300, 0x68));
        step(c, t, "write past end", CommandType.WRITE, 0, SIZE - 1024, 4096, pattern(4096, 0x69));
        step(c, t, "write zero length", CommandType.WRITE, 0, 0, 0, new byte[0]);
        step(c, t, "read back writes", CommandType.READ, 0, 4 << 20, 16384, null);
        step(c, t, "write zeroes (may punch)", CommandType.WRITE_ZEROES, 0, 8 << 20, 64 << 10, null);
        step(c, t, "write zeroes NO_HOLE", CommandType.WRITE_ZEROES, CommandFlags.NO_HOLE, (8 << 20) + (64 << 10),
                64 << 10, null);
        step(c, t, "write zeroes FAST_ZERO", CommandType.WRITE_ZEROES, CommandFlags.FAST_ZERO,
                (8 << 20) + (128 << 10), 64 << 10, null);
        step(c, t, "write zeroes past end", CommandType.WRITE_ZEROES, 0, SIZE - 4096, 8192, null);
        step(c, t, "write zeroes with DF", CommandType.WRITE_ZEROES, CommandFlags.DF, 0, 4096, null);
        step(c, t, "read zeroed", CommandType.READ, 0, 8 << 20, 256 << 10, null);
        step(c, t, "trim", CommandType.TRIM, 0, (8 << 20) + (512 << 10), 128 << 10, null);
        step(c, t, "trim past end", CommandType.TRIM, 0, SIZE - 4096, 8192, null);
        step(c, t, "cache", CommandType.CACHE, 0, 0, 1 << 20, null);
        step(c, t, "cache past end", CommandType.CACHE, 0, SIZE - 4096, 8192, null);
        step(c, t, "flush", CommandType.FLUSH, 0, 0, 0, null);
        step(c, t, "block status whole", CommandType.BLOCK_STATUS, 0, 0, SIZE, null);
        step(c, t, "block status REQ_ONE", CommandType.BLOCK_STATUS, CommandFlags.REQ_ONE, (1 << 20) - 8192,
                1 << 20, null);
        step(c, t, "block status unaligned", CommandType.BLOCK_STATUS, 0, (1 << 20) + 100, 5000, null);
        step(c, t, "block status past end", CommandType.BLOCK_STATUS, 0, SIZE - 4096, 8192, null);
        step(c, t, "block status zero length", CommandType.BLOCK_STATUS, 0, 0, 0, null);
        step(c, t, "block status with FUA", CommandType.BLOCK_STATUS, CommandFlags.FUA, 0, 4096, null);
    }

    // ------------------------------------------------------------------ machinery

    private interface Script {
        void run(Conn c, List<String> transcript) throws IOException;
    }

    /** A negotiated connection and the id the server gave base:allocation (-1 if none). */
    private record Conn(NbdClient client, int contextId) {}

    private void assertSameTranscripts(ReplyStyle style, Script script) throws Exception {
        List<String> qemu;
        List<String> node;
        // qemu-nbd ignores TRIM unless told to unmap; nbd-node always punches holes, as the spec allows.
        try (ServerProcess server = ServerProcess.qemuNbd(EXPORT, qemuImage, "-A", "--discard=unmap")) {
            qemu = transcript(server, style, script);
        }
        try (ServerProcess server = ServerProcess.nbdNode("--export", EXPORT + "=" + nodeImage)) {
            node = transcript(server, style, script);
        }
        assertThat(node).as("nbd-node transcript vs qemu-nbd").containsExactlyElementsOf(qemu);
        assertThat(qemu).as("the script ran").hasSizeGreaterThan(5);
        assertThat(Files.mismatch(qemuImage, nodeImage)).as("first byte where the final images differ").isEqualTo(-1L);
    }

    private static List<String> transcript(ServerProcess server, ReplyStyle style, Script script) throws IOException {
        List<String> t = new ArrayList<>();
        try (NbdClient client = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(20))) {
            switch (style) {
                case EXTENDED -> assertThat(client.negotiateExtendedHeaders()).isTrue();
                case STRUCTURED -> assertThat(client.negotiateStructuredReplies()).isTrue();
                case SIMPLE -> { }
            }
            int id = -1;
            if (style != ReplyStyle.SIMPLE) {
                List<OptionReply.MetaContext> set = client.setMetaContexts(EXPORT, List.of("base:allocation"));
                t.add("contexts " + set.stream().map(OptionReply.MetaContext::name).toList());
                id = set.getFirst().id();
            }
            client.go(EXPORT);
            t.add("size " + client.export().size());
            script.run(new Conn(client, id), t);
            client.disconnect();
        }
        return t;
    }

    private static void step(Conn c, List<String> t, String what, int type, int flags, long offset, long length,
                             byte[] payload) throws IOException {
        boolean payloadForm = payload != null && (flags & CommandFlags.PAYLOAD_LEN) != 0;
        long headerLength = payloadForm ? payload.length : length;
        Reply reply;
        try {
            reply = c.client().call(type, flags, offset, headerLength, payload);
        } catch (IOException e) {
            t.add(what + ": connection lost (" + e.getClass().getSimpleName() + ")");
            throw e;
        }
        long answered = payloadForm && type == CommandType.BLOCK_STATUS && payload.length >= 8
                ? ByteBuffer.wrap(payload).getLong() : length;
        t.add(what + ": " + describe(reply, offset, answered));
    }

    /** A reply reduced to what both servers must agree on. */
    private static String describe(Reply reply, long offset, long length) {
        NbdError error = reply.error();
        if (error != null) {
            return "error " + error;
        }
        List<String> parts = new ArrayList<>();
        byte[] data = null;
        for (ReplyChunk chunk : reply.chunks()) {
            switch (chunk) {
                case ReplyChunk.OffsetData(long at, ByteBuf bytes) -> {
                    data = data == null ? new byte[(int) length] : data;
                    bytes.getBytes(bytes.readerIndex(), data, (int) (at - offset), bytes.readableBytes());
                }
                case ReplyChunk.OffsetHole h -> data = data == null ? new byte[(int) length] : data;
                case ReplyChunk.BlockStatus(int id, List<BlockDescriptor> descriptors) ->
                        parts.add("context " + id + " " + merged(descriptors, length));
                case ReplyChunk.Error e -> { }
            }
        }
        if (data != null) {
            parts.add("data sha256 " + sha256(data));
        }
        return parts.isEmpty() ? "ok" : String.join("; ", parts);
    }

    /** Merges equal neighbours and cuts at the requested length (servers may report past it). */
    private static String merged(List<BlockDescriptor> descriptors, long length) {
        List<String> runs = new ArrayList<>();
        long covered = 0;
        long runLength = 0;
        long runStatus = -1;
        for (BlockDescriptor d : descriptors) {
            if (covered >= length) {
                break;
            }
            long len = Math.min(d.length(), length - covered);
            if (d.status() == runStatus) {
                runLength += len;
            } else {
                if (runStatus >= 0) {
                    runs.add(runLength + ":" + runStatus);
                }
                runLength = len;
                runStatus = d.status();
            }
            covered += len;
        }
        runs.add(runLength + ":" + runStatus);
        return runs.toString();
    }

    private static byte[] statusPayload(long effectLength, int... ids) {
        ByteBuffer b = ByteBuffer.allocate(8 + 4 * ids.length);
        b.putLong(effectLength);
        for (int id : ids) {
            b.putInt(id);
        }
        return b.array();
    }

    private static byte[] pattern(int length, int value) {
        byte[] b = new byte[length];
        Arrays.fill(b, (byte) value);
        return b;
    }

    private static void writePattern(RandomAccessFile f, long offset, int length, int value) throws IOException {
        f.seek(offset);
        f.write(pattern(length, value));
    }

    private static String sha256(byte[] data) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(data)).substring(0, 16);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
