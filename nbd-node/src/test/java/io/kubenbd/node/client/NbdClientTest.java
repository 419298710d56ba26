package io.kubenbd.node.client;

import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.InfoType;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.OptionReplyType;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.protocol.ReplyChunk;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.ReplyType;
import io.kubenbd.node.protocol.RequestHeader;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.DataOutputStream;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.List;

import static io.kubenbd.node.client.HostileServer.CONTEXT_ID;
import static io.kubenbd.node.client.HostileServer.optionReply;
import static io.kubenbd.node.client.HostileServer.optionReplyHeader;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The client against a server that breaks the protocol on purpose: every length is checked
 * before it is allocated, every chunk against the request it answers, and a violation fails
 * the request with an {@link NbdProtocolException} and drops the connection. A client stuck
 * reading, or allocating what a header claims, runs into the timeout.
 */
@Timeout(value = 10, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class NbdClientTest {
    /** Longer than the test's timeout: a client that waits for bytes that never come hangs the test. */
    private static final Duration CLIENT_TIMEOUT = Duration.ofSeconds(30);
    private static final int DONE = ReplyType.FLAG_DONE;
    private static final long HUGE = 60L << 20;

    private HostileServer server;
    private NbdClient client;

    @AfterEach
    void close() throws IOException {
        if (client != null) {
            client.close();
        }
        if (server != null) {
            server.close();
            assertThat(server.failure()).as("the fake server's own failure").isNull();
        }
    }

    private NbdClient transmitting(ReplyStyle style, HostileServer.Transmission transmission) throws IOException {
        server = HostileServer.transmission(style, transmission);
        client = NbdClient.connect("127.0.0.1", server.port(), CLIENT_TIMEOUT);
        switch (style) {
            case STRUCTURED -> assertThat(client.negotiateStructuredReplies()).isTrue();
            case EXTENDED -> assertThat(client.negotiateExtendedHeaders()).isTrue();
            case SIMPLE -> assertThat(client.negotiateBestReplies()).isEqualTo(ReplyStyle.SIMPLE);
        }
        assertThat(client.setMetaContexts("disk", List.of("base:allocation"))).hasSize(1);
        client.go("disk");
        return client;
    }

    private NbdClient handshaking(HostileServer.Handshake handshake) throws IOException {
        server = HostileServer.handshake(handshake);
        client = NbdClient.connect("127.0.0.1", server.port(), CLIENT_TIMEOUT);
        return client;
    }

    /** The call fails with a protocol violation naming {@code why}, and the connection is gone for good. */
    private void assertViolation(ThrowingCallable call, String why) throws InterruptedException {
        assertThatThrownBy(call).isInstanceOf(NbdProtocolException.class).hasMessageContaining(why);
        assertThat(server.clientHungUp(Duration.ofSeconds(3))).as("the client dropped the connection").isTrue();
        assertThatThrownBy(() -> client.flush()).as("the connection is not reused").isInstanceOf(IOException.class);
    }

    private static long allocatedBytes() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }

    private static void data(HostileServer s, DataOutputStream out, RequestHeader request, int flags, long at, int length)
            throws IOException {
        s.chunkHeader(out, request, flags, ReplyType.OFFSET_DATA, 8L + length);
        out.writeLong(at);
        out.write(new byte[length]);
    }

    private static void hole(HostileServer s, DataOutputStream out, RequestHeader request, int flags, long at, int length)
            throws IOException {
        s.chunkHeader(out, request, flags, ReplyType.OFFSET_HOLE, 12);
        out.writeLong(at);
        out.writeInt(length);
    }

    // ---------------------------------------------------------------- a polite server still works

    @Test
    void chunksInAnyOrderAssembleTheRead() throws Exception {
        transmitting(ReplyStyle.EXTENDED, (request, out) -> {
            server.chunkHeader(out, request, 0, ReplyType.OFFSET_DATA, 8 + 2048);
            out.writeLong(request.offset() + 2048);
            out.write(new byte[2048]);
            server.chunkHeader(out, request, 0, ReplyType.OFFSET_DATA, 8 + 2);
            out.writeLong(request.offset());
            out.write(new byte[] {1, 2});
            hole(server, out, request, DONE, request.offset() + 2, 2046);
        });
        byte[] read = client.read(4096, 4096);
        assertThat(read[0]).isEqualTo((byte) 1);
        assertThat(read[1]).isEqualTo((byte) 2);
        assertThat(client.read(0, 4096)).hasSize(4096);
    }

    // ---------------------------------------------------------------- transmission

    @Test
    void dataOutsideTheRequestedRangeIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> data(server, out, request, DONE, 8192, 16));
        assertViolation(() -> client.read(0, 4096), "outside");
    }

    @Test
    void aDataChunkLongerThanTheReadIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> data(server, out, request, DONE, 0, 8192));
        assertViolation(() -> client.read(0, 4096), "outside");
    }

    @Test
    void overlappingContentChunksAreAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> {
            data(server, out, request, 0, 0, 4096);
            hole(server, out, request, DONE, 2048, 2048);
        });
        assertViolation(() -> client.read(0, 4096), "overlap");
    }

    @Test
    void aSuccessfulReadThatLeavesBytesUncoveredIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> data(server, out, request, DONE, 0, 2048));
        assertViolation(() -> client.read(0, 4096), "covered");
    }

    @Test
    void aMillionTinyChunksFailTheReadEarly() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> {
            for (int i = 0; i < 1_000_000; i++) {
                hole(server, out, request, 0, i, 1);
            }
            server.chunkHeader(out, request, DONE, ReplyType.NONE, 0);
        });
        assertViolation(() -> client.read(0, 1 << 20), "chunks");
    }

    @Test
    void aChunkLengthIsCheckedBeforeAnythingIsAllocated() throws Exception {
        // The header announces 60 MiB for a 4 KiB read and then the server says nothing more.
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> server.chunkHeader(out, request, DONE,
                ReplyType.OFFSET_DATA, HUGE));
        long before = allocatedBytes();
        assertViolation(() -> client.read(0, 4096), "OFFSET_DATA");
        assertThat(allocatedBytes() - before).as("bytes the client allocated").isLessThan(1 << 20);
    }

    @Test
    void aReplyForACookieNotInFlightIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) ->
                HostileServer.structuredHeader(out, DONE, ReplyType.NONE, request.cookie() + 1000, 0));
        assertViolation(() -> client.flush(), "cookie");
    }

    @Test
    void aSimpleReplyForAnUnknownCookieIsAViolation() throws Exception {
        transmitting(ReplyStyle.SIMPLE, (request, out) -> HostileServer.simpleReply(out, 0, request.cookie() ^ 0x55));
        assertViolation(() -> client.read(0, 512), "cookie");
    }

    @Test
    void aStructuredReplyWhenOnlySimpleRepliesWereNegotiatedIsAViolation() throws Exception {
        transmitting(ReplyStyle.SIMPLE, (request, out) ->
                HostileServer.structuredHeader(out, DONE, ReplyType.NONE, request.cookie(), 0));
        assertViolation(() -> client.flush(), "structured");
    }

    @Test
    void anExtendedReplyWhenStructuredRepliesWereNegotiatedIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) ->
                HostileServer.extendedHeader(out, DONE, ReplyType.NONE, request.cookie(), request.offset(), 0));
        assertViolation(() -> client.flush(), "extended");
    }

    @Test
    void aSimpleReplyToAStructuredReadIsAViolation() throws Exception {
        // Without a payload the old client took it for a successful read of zeroes.
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> HostileServer.simpleReply(out, 0, request.cookie()));
        assertViolation(() -> client.read(0, 512), "simple reply");
    }

    @Test
    void aSimpleReplyUnderExtendedHeadersIsAViolation() throws Exception {
        transmitting(ReplyStyle.EXTENDED, (request, out) -> HostileServer.simpleReply(out, 0, request.cookie()));
        assertViolation(() -> client.flush(), "simple reply");
    }

    @Test
    void anExtendedReplyMustEchoTheRequestOffset() throws Exception {
        transmitting(ReplyStyle.EXTENDED, (request, out) -> {
            HostileServer.extendedHeader(out, DONE, ReplyType.OFFSET_HOLE, request.cookie(), request.offset() + 512, 12);
            out.writeLong(request.offset());
            out.writeInt((int) request.length());
        });
        assertViolation(() -> client.read(4096, 512), "offset");
    }

    @Test
    void contentChunksAnswerOnlyReads() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> hole(server, out, request, DONE, 0, 512));
        assertViolation(() -> client.flush(), "NBD_CMD_FLUSH");
    }

    @Test
    void anErrorMessageLongerThanTheSpecAllowsIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> {
            server.chunkHeader(out, request, DONE, ReplyType.ERROR, 6 + 60_000);
            out.writeInt(NbdError.EIO.code());
            out.writeShort(60_000);
            out.write(new byte[60_000]);
        });
        assertViolation(() -> client.flush(), "message");
    }

    @Test
    void anErrorMessageLengthBeyondTheChunkIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> {
            server.chunkHeader(out, request, DONE, ReplyType.ERROR, 6);
            out.writeInt(NbdError.EIO.code());
            out.writeShort(100);
        });
        assertViolation(() -> client.flush(), "message");
    }

    @Test
    void aBlockStatusDescriptorCountIsCheckedAgainstTheChunkLength() throws Exception {
        transmitting(ReplyStyle.EXTENDED, (request, out) -> {
            server.chunkHeader(out, request, DONE, ReplyType.BLOCK_STATUS_EXT, 8 + 16);
            out.writeInt(CONTEXT_ID);
            out.writeInt(Integer.MAX_VALUE);
            out.writeLong(request.length());
            out.writeLong(0);
        });
        assertViolation(() -> client.blockStatus(0, 4096, 0), "descriptor");
    }

    @Test
    void blockStatusForAContextNotNegotiatedIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> {
            server.chunkHeader(out, request, DONE, ReplyType.BLOCK_STATUS, 4 + 8);
            out.writeInt(CONTEXT_ID + 1);
            out.writeInt((int) request.length());
            out.writeInt(0);
        });
        assertViolation(() -> client.blockStatus(0, 4096, 0), "context");
    }

    @Test
    void aSingleDescriptorLongerThanTheRequestWithReqOneIsAViolation() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> {
            server.chunkHeader(out, request, DONE, ReplyType.BLOCK_STATUS, 4 + 8);
            out.writeInt(CONTEXT_ID);
            out.writeInt((int) request.length() * 2);
            out.writeInt(0);
        });
        assertViolation(() -> client.blockStatus(0, 4096, CommandFlags.REQ_ONE), "descriptor");
    }

    @Test
    void blockStatusChunksAnswerOnlyBlockStatus() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> {
            server.chunkHeader(out, request, DONE, ReplyType.BLOCK_STATUS, 4 + 8);
            out.writeInt(CONTEXT_ID);
            out.writeInt(4096);
            out.writeInt(0);
        });
        assertViolation(() -> client.read(0, 4096), "NBD_CMD_READ");
    }

    @Test
    void aSimpleReadReplyLongerThanTheClientBuffersIsRefusedBeforeAllocating() throws Exception {
        transmitting(ReplyStyle.SIMPLE, (request, out) -> HostileServer.simpleReply(out, 0, request.cookie()));
        client.send(new RequestHeader(0, CommandType.READ, client.nextCookie(), 0, HUGE * 4), null);
        long before = allocatedBytes();
        assertViolation(() -> client.receive(), "READ");
        assertThat(allocatedBytes() - before).as("bytes the client allocated").isLessThan(1 << 20);
    }

    @Test
    void aSuccessfulSimpleReplyToBlockStatusIsAViolation() throws Exception {
        // Block status comes only in status chunks; a bare success would read as "no extents".
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> HostileServer.simpleReply(out, 0, request.cookie()));
        assertViolation(() -> client.blockStatus(0, 4096, 0), "NBD_CMD_BLOCK_STATUS");
    }

    @Test
    void aHoleLargerThanAnIntIsKeptWhole() throws Exception {
        transmitting(ReplyStyle.EXTENDED, (request, out) -> hole(server, out, request, DONE, request.offset(),
                (int) request.length()));
        long length = 3L << 30;
        client.send(new RequestHeader(0, CommandType.READ, client.nextCookie(), 0, length), null);
        List<ReplyChunk> chunks = client.receive().chunks();
        assertThat(chunks).allSatisfy(c -> assertThat(((ReplyChunk.OffsetHole) c).length()).isPositive());
        assertThat(chunks.stream().mapToLong(c -> ((ReplyChunk.OffsetHole) c).length()).sum()).isEqualTo(length);
    }

    @Test
    void aCommandErrorLeavesTheConnectionUsable() throws Exception {
        transmitting(ReplyStyle.STRUCTURED, (request, out) -> {
            if (request.type() == CommandType.FLUSH) {
                server.chunkHeader(out, request, DONE, ReplyType.ERROR, 6 + 4);
                out.writeInt(NbdError.EIO.code());
                out.writeShort(4);
                out.write("disk".getBytes());
            } else {
                hole(server, out, request, DONE, request.offset(), (int) request.length());
            }
        });
        assertThatThrownBy(() -> client.flush()).isInstanceOf(NbdCommandException.class).hasMessageContaining("disk");
        assertThat(client.read(0, 512)).hasSize(512);
        assertThat(client.call(CommandType.READ, 0, 512, 512, null).chunks())
                .containsExactly(new ReplyChunk.OffsetHole(512, 512));
    }

    // ---------------------------------------------------------------- handshake

    @Test
    void anOptionReplyLengthIsCheckedBeforeAnythingIsAllocated() throws Exception {
        handshaking((option, data, out) -> {
            optionReplyHeader(out, option, OptionReplyType.ACK, HUGE);
            return false;
        });
        long before = allocatedBytes();
        assertViolation(() -> client.negotiateStructuredReplies(), "NBD_REP_ACK");
        assertThat(allocatedBytes() - before).as("bytes the client allocated").isLessThan(1 << 20);
    }

    @Test
    void anExportNameLongerThanTheSpecAllowsIsAViolation() throws Exception {
        handshaking((option, data, out) -> {
            optionReply(out, option, new OptionReply.Server("x".repeat(5000), ""));
            optionReply(out, option, new OptionReply.Ack());
            return false;
        });
        assertViolation(() -> client.listExports(), "4096");
    }

    @Test
    void endlessExportListsAreCutOff() throws Exception {
        handshaking((option, data, out) -> {
            for (int i = 0; i < 1_000_000; i++) {
                optionReply(out, option, new OptionReply.Server("e" + i, ""));
            }
            optionReply(out, option, new OptionReply.Ack());
            return false;
        });
        assertViolation(() -> client.listExports(), "replies");
    }

    @Test
    void aReplyTypeTheOptionDoesNotTakeIsAViolation() throws Exception {
        handshaking((option, data, out) -> {
            optionReply(out, option, new OptionReply.MetaContext(1, "base:allocation"));
            optionReply(out, option, new OptionReply.Ack());
            return false;
        });
        assertViolation(() -> client.negotiateStructuredReplies(), "NBD_REP_META_CONTEXT");
    }

    @Test
    void repeatedMetaContextIdsAreAViolation() throws Exception {
        handshaking((option, data, out) -> {
            optionReply(out, option, new OptionReply.MetaContext(1, "base:allocation"));
            optionReply(out, option, new OptionReply.MetaContext(1, "qemu:allocation-depth"));
            optionReply(out, option, new OptionReply.Ack());
            return false;
        });
        assertViolation(() -> client.setMetaContexts("disk", List.of("base:allocation", "qemu:")), "context id");
    }

    @Test
    void anInfoItemOfTheWrongLengthIsAViolation() throws Exception {
        handshaking((option, data, out) -> {
            optionReplyHeader(out, option, OptionReplyType.INFO, 2 + 8 + 2 + 100);
            out.writeShort(InfoType.EXPORT);
            out.writeLong(HostileServer.SIZE);
            out.writeShort(1);
            out.write(new byte[100]);
            optionReply(out, option, new OptionReply.Ack());
            return false;
        });
        assertViolation(() -> client.info("disk"), "NBD_INFO_EXPORT");
    }

    @Test
    void impossibleBlockSizesAreAViolation() throws Exception {
        handshaking((option, data, out) -> {
            optionReply(out, option, new OptionReply.InfoExport(HostileServer.SIZE, 1));
            optionReply(out, option, new OptionReply.InfoBlockSize(3, 4096, 1 << 20));
            optionReply(out, option, new OptionReply.Ack());
            return false;
        });
        assertViolation(() -> client.info("disk"), "block size");
    }

    @Test
    void aNegativeExportSizeIsAViolation() throws Exception {
        handshaking((option, data, out) -> {
            optionReply(out, option, new OptionReply.InfoExport(-1, 1));
            optionReply(out, option, new OptionReply.Ack());
            return false;
        });
        assertViolation(() -> client.info("disk"), "size");
    }

    @Test
    void aReplyForAnotherOptionIsAViolation() throws Exception {
        handshaking((option, data, out) -> {
            optionReply(out, OptionType.GO, new OptionReply.Ack());
            return false;
        });
        assertViolation(() -> client.negotiateStructuredReplies(), "option");
    }
}
