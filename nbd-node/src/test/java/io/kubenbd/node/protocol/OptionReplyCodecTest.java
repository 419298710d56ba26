package io.kubenbd.node.protocol;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** Option reply messages: the server's encoding, the client's decoding, and the bytes the spec prescribes. */
class OptionReplyCodecTest {

    private static byte[] encode(int option, OptionReply reply) {
        ByteBuf out = Unpooled.buffer();
        OptionReplyCodec.encode(option, reply, out);
        byte[] bytes = new byte[out.readableBytes()];
        out.readBytes(bytes);
        return bytes;
    }

    private static byte[] hex(String spaced) {
        return HexFormat.of().parseHex(spaced.replace(" ", ""));
    }

    static Stream<OptionReply> replies() {
        return Stream.of(
                new OptionReply.Ack(),
                new OptionReply.Server("disk", "VM disk, 10 GiB"),
                new OptionReply.Server("dïsk", ""),
                new OptionReply.Server("", ""),
                new OptionReply.InfoExport(10L << 30, TransmissionFlags.HAS_FLAGS | TransmissionFlags.SEND_FLUSH),
                new OptionReply.InfoExport(Long.MAX_VALUE, 0xFFFF),
                new OptionReply.InfoName("disk"),
                new OptionReply.InfoDescription("a description ✓"),
                new OptionReply.InfoBlockSize(1, 4096, Limits.MAX_PAYLOAD),
                new OptionReply.MetaContext(1, "base:allocation"),
                new OptionReply.MetaContext(0xFFFFFFFF, ""),
                new OptionReply.Error(OptionReplyType.ERR_UNSUP, ""),
                new OptionReply.Error(OptionReplyType.ERR_UNKNOWN, "no export named 'x'"),
                new OptionReply.Error(OptionReplyType.ERR_TOO_BIG, "option of 1048576 bytes"),
                new OptionReply.Error(OptionReplyType.ERR_EXT_HEADER_REQD, "é"),
                new OptionReply.Error(0x8000ABCD, "an error type this side does not know"));
    }

    @ParameterizedTest
    @MethodSource("replies")
    void encodeThenDecodeGivesTheSameReply(OptionReply reply) {
        ByteBuf out = Unpooled.buffer();
        OptionReplyCodec.encode(OptionType.GO, reply, out);
        assertThat(out.readLong()).isEqualTo(Magic.OPTION_REPLY);
        assertThat(out.readInt()).isEqualTo(OptionType.GO);
        int type = out.readInt();
        assertThat(type).isEqualTo(reply.type());
        int length = out.readInt();
        assertThat(length).isEqualTo(out.readableBytes());
        ByteBuf payload = out.readSlice(length);
        assertThat(OptionReplyCodec.decode(type, payload)).isEqualTo(reply);
        assertThat(payload.isReadable()).as("decode consumed the payload").isFalse();
    }

    @Test
    void infoExportMatchesTheSpecLayout() {
        // magic, option NBD_OPT_GO (7), NBD_REP_INFO (3), length 12,
        // NBD_INFO_EXPORT (0), 64-bit size, 16-bit transmission flags
        int flags = TransmissionFlags.HAS_FLAGS | TransmissionFlags.SEND_FLUSH | TransmissionFlags.SEND_FUA;
        assertThat(encode(OptionType.GO, new OptionReply.InfoExport(0x40000200L, flags))).containsExactly(hex(
                "0003e889045565a9 00000007 00000003 0000000c 0000 0000000040000200 000d"));
    }

    @Test
    void errorReplyMatchesTheSpecLayout() {
        // NBD_REP_ERR_UNKNOWN is 2^31 + 6; the payload is the message without any length prefix.
        assertThat(encode(OptionType.INFO, new OptionReply.Error(OptionReplyType.ERR_UNKNOWN, "no export")))
                .containsExactly(hex("0003e889045565a9 00000006 80000006 00000009"
                        + HexFormat.of().formatHex("no export".getBytes(StandardCharsets.US_ASCII))));
    }

    @Test
    void ackAndServerAndBlockSizeLayouts() {
        assertThat(encode(OptionType.STRUCTURED_REPLY, new OptionReply.Ack()))
                .containsExactly(hex("0003e889045565a9 00000008 00000001 00000000"));
        // NBD_REP_SERVER: 32-bit name length, name, then the description up to the end.
        assertThat(encode(OptionType.LIST, new OptionReply.Server("ab", "c")))
                .containsExactly(hex("0003e889045565a9 00000003 00000002 00000007 00000002 6162 63"));
        // NBD_INFO_BLOCK_SIZE (3): minimum, preferred, maximum.
        assertThat(encode(OptionType.GO, new OptionReply.InfoBlockSize(1, 4096, 0x2000000)))
                .containsExactly(hex("0003e889045565a9 00000007 00000003 0000000e 0003 00000001 00001000 02000000"));
        // NBD_REP_META_CONTEXT (4): context id, then the name.
        assertThat(encode(OptionType.SET_META_CONTEXT, new OptionReply.MetaContext(5, "base:")))
                .containsExactly(hex("0003e889045565a9 0000000a 00000004 00000009 00000005 626173653a"));
    }

    @Test
    void unknownInfoTypeDecodesAsUnknownAndCannotBeEncoded() {
        assertThat(OptionReplyCodec.decode(OptionReplyType.INFO, Unpooled.wrappedBuffer(hex("0011 0102"))))
                .isEqualTo(new OptionReply.InfoUnknown(0x11));
        assertThatThrownBy(() -> encode(OptionType.GO, new OptionReply.InfoUnknown(0x11)))
                .isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void serverNameLengthBeyondThePayloadIsRejected() {
        assertThatThrownBy(() -> OptionReplyCodec.decode(OptionReplyType.SERVER,
                Unpooled.wrappedBuffer(hex("00000005 61626364"))))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("export name length 5");
        assertThatThrownBy(() -> OptionReplyCodec.decode(OptionReplyType.SERVER,
                Unpooled.wrappedBuffer(hex("ffffffff 61626364"))))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("4294967295");
    }

    @Test
    void unknownNonErrorReplyTypeIsRejected() {
        assertThatThrownBy(() -> OptionReplyCodec.decode(5, Unpooled.EMPTY_BUFFER))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("unknown option reply type 5");
    }

    @Test
    void errorRecordOnlyTakesErrorTypes() {
        assertThatThrownBy(() -> new OptionReply.Error(OptionReplyType.ACK, "x"))
                .isInstanceOf(IllegalArgumentException.class);
        assertThat(OptionReplyType.isError(OptionReplyType.ERR_TOO_BIG)).isTrue();
        assertThat(OptionReplyType.ERR_TOO_BIG).isEqualTo(0x80000009);
    }
}
