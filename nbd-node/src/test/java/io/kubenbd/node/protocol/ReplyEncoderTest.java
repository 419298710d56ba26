package io.kubenbd.node.protocol;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Reply bytes in the three styles, checked against the layouts of the spec. */
class ReplyEncoderTest {
    private static final long COOKIE = 0x0102030405060708L;
    private static final long OFFSET = 0x1000L;

    private static List<Object> encode(ReplyStyle style, Reply reply) {
        List<Object> out = new ArrayList<>();
        new ReplyEncoder(style).encode(ByteBufAllocator.DEFAULT, reply, out);
        return out;
    }

    /** All buffers of {@code out} concatenated; releases them. */
    private static byte[] bytes(List<Object> out) {
        ByteBuf all = Unpooled.buffer();
        for (Object o : out) {
            ByteBuf b = (ByteBuf) o;
            all.writeBytes(b, b.readerIndex(), b.readableBytes());
            b.release();
        }
        return ByteBufUtil.getBytes(all);
    }

    private static byte[] hex(String spaced) {
        return HexFormat.of().parseHex(spaced.replace(" ", ""));
    }

    private static Reply reply(ReplyChunk... chunks) {
        return new Reply(COOKIE, OFFSET, List.of(chunks));
    }

    private static ByteBuf data(String s) {
        return Unpooled.copiedBuffer(s, StandardCharsets.US_ASCII);
    }

    // --- simple --------------------------------------------------------------------------

    @Test
    void simpleOk() {
        assertThat(bytes(encode(ReplyStyle.SIMPLE, reply())))
                .containsExactly(hex("67446698 00000000 0102030405060708"));
    }

    @Test
    void simpleError() {
        assertThat(bytes(encode(ReplyStyle.SIMPLE, reply(new ReplyChunk.Error(NbdError.ENOSPC, "disk full")))))
                .containsExactly(hex("67446698 0000001c 0102030405060708"));
    }

    @Test
    void simpleReadPassesTheDataBufferOnUncopied() {
        ByteBuf data = data("abc");
        List<Object> out = encode(ReplyStyle.SIMPLE, reply(new ReplyChunk.OffsetData(OFFSET, data)));
        assertThat(out).hasSize(2);
        assertThat(out.get(1)).isSameAs(data);
        assertThat(bytes(out)).containsExactly(hex("67446698 00000000 0102030405060708 616263"));
        assertThat(data.refCnt()).isZero();
    }

    @Test
    void simpleErrorDropsAndReleasesReadData() {
        ByteBuf data = data("abc");
        List<Object> out = encode(ReplyStyle.SIMPLE, reply(new ReplyChunk.OffsetData(OFFSET, data),
                new ReplyChunk.Error(NbdError.EIO, "read failed")));
        assertThat(data.refCnt()).isZero();
        assertThat(bytes(out)).containsExactly(hex("67446698 00000005 0102030405060708"));
    }

    @Test
    void holeOrBlockStatusInASimpleReplyIsAProgrammingError() {
        assertThatThrownBy(() -> bytes(encode(ReplyStyle.SIMPLE, reply(new ReplyChunk.OffsetHole(0, 512)))))
                .isInstanceOf(IllegalStateException.class);
        assertThatThrownBy(() -> bytes(encode(ReplyStyle.SIMPLE,
                reply(new ReplyChunk.BlockStatus(1, List.of(new BlockDescriptor(512, 0)))))))
                .isInstanceOf(IllegalStateException.class);
    }

    // --- structured ----------------------------------------------------------------------

    @Test
    void structuredEmptyReplyIsANoneChunkWithDone() {
        // magic, flags DONE, type NONE, cookie, length 0
        assertThat(bytes(encode(ReplyStyle.STRUCTURED, reply())))
                .containsExactly(hex("668e33ef 0001 0000 0102030405060708 00000000"));
    }

    @Test
    void structuredReadChunksOnlyTheLastIsDone() {
        ByteBuf data = data("xy");
        List<Object> out = encode(ReplyStyle.STRUCTURED, reply(
                new ReplyChunk.OffsetData(0x1000, data),
                new ReplyChunk.OffsetHole(0x1002, 0x200)));
        assertThat(out).contains(data);
        assertThat(bytes(out)).containsExactly(hex(
                // OFFSET_DATA (1), not done, length 8 + 2, offset, data
                "668e33ef 0000 0001 0102030405060708 0000000a 0000000000001000 7879"
                // OFFSET_HOLE (2), done, length 12, offset, hole size
                + "668e33ef 0001 0002 0102030405060708 0000000c 0000000000001002 00000200"));
        assertThat(data.refCnt()).isZero();
    }

    @Test
    void structuredBlockStatus() {
        Reply r = reply(new ReplyChunk.BlockStatus(1, List.of(new BlockDescriptor(0x10000, 0), new BlockDescriptor(0x200, 3))));
        // BLOCK_STATUS (5), length 4 + 2 * 8, context id, then 32-bit length and status per extent
        assertThat(bytes(encode(ReplyStyle.STRUCTURED, r))).containsExactly(hex(
                "668e33ef 0001 0005 0102030405060708 00000014 00000001 00010000 00000000 00000200 00000003"));
    }

    @Test
    void structuredError() {
        // ERROR (2^15 + 1), length 6 + message, error, 16-bit message length, message
        assertThat(bytes(encode(ReplyStyle.STRUCTURED, reply(new ReplyChunk.Error(NbdError.EPERM, "ro")))))
                .containsExactly(hex("668e33ef 0001 8001 0102030405060708 00000008 00000001 0002 726f"));
    }

    @Test
    void structuredMultipleChunksBeforeAnError() {
        Reply r = reply(new ReplyChunk.BlockStatus(2, List.of(new BlockDescriptor(1, 1))),
                new ReplyChunk.Error(NbdError.EIO, ""));
        assertThat(bytes(encode(ReplyStyle.STRUCTURED, r))).containsExactly(hex(
                "668e33ef 0000 0005 0102030405060708 0000000c 00000002 00000001 00000001"
                + "668e33ef 0001 8001 0102030405060708 00000006 00000005 0000"));
    }

    // --- extended ------------------------------------------------------------------------

    @Test
    void extendedEmptyReplyEchoesTheOffset() {
        // magic, flags DONE, type NONE, cookie, request offset, 64-bit length 0
        assertThat(bytes(encode(ReplyStyle.EXTENDED, reply())))
                .containsExactly(hex("6e8a278c 0001 0000 0102030405060708 0000000000001000 0000000000000000"));
    }

    @Test
    void extendedReadAndHole() {
        List<Object> out = encode(ReplyStyle.EXTENDED, reply(
                new ReplyChunk.OffsetHole(0x1000, 0x10),
                new ReplyChunk.OffsetData(0x1010, data("z"))));
        assertThat(bytes(out)).containsExactly(hex(
                // OFFSET_HOLE: header with the request offset and a 64-bit length 12, then hole offset and size
                "6e8a278c 0000 0002 0102030405060708 0000000000001000 000000000000000c 0000000000001000 00000010"
                + "6e8a278c 0001 0001 0102030405060708 0000000000001000 0000000000000009 0000000000001010 7a"));
    }

    @Test
    void extendedBlockStatusUsesTheExtType() {
        Reply r = reply(new ReplyChunk.BlockStatus(7, List.of(new BlockDescriptor(1L << 40, 2))));
        // BLOCK_STATUS_EXT (6), length 8 + 16, context id, descriptor count, 64-bit length and status
        assertThat(bytes(encode(ReplyStyle.EXTENDED, r))).containsExactly(hex(
                "6e8a278c 0001 0006 0102030405060708 0000000000001000 0000000000000018"
                + "00000007 00000001 0000010000000000 0000000000000002"));
    }

    @Test
    void extendedError() {
        assertThat(bytes(encode(ReplyStyle.EXTENDED, reply(new ReplyChunk.Error(NbdError.ENOTSUP, "no")))))
                .containsExactly(hex("6e8a278c 0001 8001 0102030405060708 0000000000001000 0000000000000008"
                        + "0000005f 0002 6e6f"));
    }

    // --- error messages ------------------------------------------------------------------

    private static ByteBuffer errorMessage(ReplyStyle style, String message) {
        ByteBuf all = Unpooled.wrappedBuffer(bytes(encode(style, reply(new ReplyChunk.Error(NbdError.EIO, message)))));
        int header = style == ReplyStyle.EXTENDED ? 32 : 20;
        long length = style == ReplyStyle.EXTENDED ? all.getLong(24) : all.getUnsignedInt(16);
        int messageLength = all.getUnsignedShort(header + 4);
        assertThat(length).isEqualTo(6L + messageLength);
        assertThat(all.readableBytes()).isEqualTo(header + 6 + messageLength);
        return all.nioBuffer(header + 6, messageLength);
    }

    @Test
    void longErrorMessageIsTruncatedAt4096Bytes() {
        for (ReplyStyle style : new ReplyStyle[] {ReplyStyle.STRUCTURED, ReplyStyle.EXTENDED}) {
            String message = "0123456789".repeat(500);
            ByteBuffer text = errorMessage(style, message);
            assertThat(text.remaining()).isEqualTo(Limits.MAX_STRING);
            assertThat(StandardCharsets.US_ASCII.decode(text).toString()).isEqualTo(message.substring(0, 4096));
            assertThat(errorMessage(style, "x".repeat(4096)).remaining()).isEqualTo(4096);
        }
    }

    @Test
    void truncationDoesNotSplitACharacter() throws CharacterCodingException {
        // 1 + 2 * 2048 bytes: cutting at byte 4096 would leave half of the last 'é', which is not UTF-8.
        String message = "a" + "é".repeat(2048);
        ByteBuffer text = errorMessage(ReplyStyle.STRUCTURED, message);
        String decoded = StandardCharsets.UTF_8.newDecoder().decode(text).toString();
        assertThat(message).startsWith(decoded);
        assertThat(decoded).hasSize(2048); // "a" and 2047 'é': 4095 bytes
    }

    // --- through a pipeline --------------------------------------------------------------

    @Test
    void encodesThroughAChannel() {
        EmbeddedChannel channel = new EmbeddedChannel(new ReplyEncoder(ReplyStyle.STRUCTURED));
        channel.writeOutbound(reply());
        ByteBuf out = channel.readOutbound();
        assertThat(ByteBufUtil.getBytes(out)).containsExactly(hex("668e33ef 0001 0000 0102030405060708 00000000"));
        out.release();
        assertThat(channel.finish()).isFalse();
    }
}
