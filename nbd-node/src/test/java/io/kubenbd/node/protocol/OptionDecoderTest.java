package io.kubenbd.node.protocol;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.CorruptedFrameException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Handshake framing: client flags once, then options, however the bytes are split. */
class OptionDecoderTest {
    private final EmbeddedChannel channel = new EmbeddedChannel(new OptionDecoder());
    private final List<ByteBuf> fed = new ArrayList<>();

    @AfterEach
    void noLeaks() {
        channel.finishAndReleaseAll();
        assertThat(fed).allSatisfy(b -> assertThat(b.refCnt()).as("input buffer released").isZero());
    }

    /** Client flags, then a GO, STRUCTURED_REPLY, LIST_META_CONTEXT, an unknown option and ABORT. */
    private static byte[] session() {
        ByteBuf b = Unpooled.buffer();
        b.writeInt(HandshakeFlags.CLIENT_FIXED_NEWSTYLE | HandshakeFlags.CLIENT_NO_ZEROES);
        ByteBuf go = Unpooled.buffer();
        OptionCodec.encode(new OptionRequest.Info(true, "disk", List.of(InfoType.BLOCK_SIZE, InfoType.NAME)), go);
        option(b, OptionType.GO, go);
        option(b, OptionType.STRUCTURED_REPLY, Unpooled.EMPTY_BUFFER);
        ByteBuf meta = Unpooled.buffer();
        OptionCodec.encode(new OptionRequest.MetaContext(false, "disk", List.of("base:", "qemu:dirty-bitmap:x")), meta);
        option(b, OptionType.LIST_META_CONTEXT, meta);
        option(b, 99, Unpooled.wrappedBuffer(new byte[] {1, 2, 3}));
        option(b, OptionType.ABORT, Unpooled.EMPTY_BUFFER);
        byte[] bytes = new byte[b.readableBytes()];
        b.readBytes(bytes);
        return bytes;
    }

    private static final List<Object> EXPECTED = List.of(
            new ClientFlags(3),
            new OptionRequest.Info(true, "disk", List.of(InfoType.BLOCK_SIZE, InfoType.NAME)),
            new OptionRequest.StructuredReply(),
            new OptionRequest.MetaContext(false, "disk", List.of("base:", "qemu:dirty-bitmap:x")),
            new OptionRequest.Unsupported(99),
            new OptionRequest.Abort());

    static void option(ByteBuf out, int option, ByteBuf data) {
        out.writeLong(Magic.IHAVEOPT);
        out.writeInt(option);
        out.writeInt(data.readableBytes());
        out.writeBytes(data);
    }

    private static byte[] optionBytes(int option, byte[] data) {
        ByteBuf b = Unpooled.buffer();
        option(b, option, Unpooled.wrappedBuffer(data));
        byte[] bytes = new byte[b.readableBytes()];
        b.readBytes(bytes);
        return bytes;
    }

    private void feed(byte[] bytes, int from, int to) {
        ByteBuf piece = Unpooled.copiedBuffer(bytes, from, to - from);
        fed.add(piece);
        channel.writeInbound(piece);
    }

    private List<Object> drain() {
        List<Object> messages = new ArrayList<>();
        Object m;
        while ((m = channel.readInbound()) != null) {
            messages.add(m);
        }
        return messages;
    }

    @Test
    void decodesFlagsThenOptionsInOnePiece() {
        byte[] bytes = session();
        feed(bytes, 0, bytes.length);
        assertThat(drain()).containsExactlyElementsOf(EXPECTED);
    }

    @Test
    void decodesTheSameOneByteAtATime() {
        byte[] bytes = session();
        for (int i = 0; i < bytes.length; i++) {
            feed(bytes, i, i + 1);
        }
        assertThat(drain()).containsExactlyElementsOf(EXPECTED);
    }

    @ParameterizedTest
    @ValueSource(longs = {1, 2, 3, 42, 1234567})
    void decodesTheSameWithRandomSplits(long seed) {
        byte[] bytes = session();
        Random random = new Random(seed);
        int at = 0;
        while (at < bytes.length) {
            int next = Math.min(bytes.length, at + 1 + random.nextInt(40));
            feed(bytes, at, next);
            at = next;
        }
        assertThat(drain()).containsExactlyElementsOf(EXPECTED);
    }

    @Test
    void flagsAloneWaitForTheFirstOption() {
        byte[] bytes = session();
        feed(bytes, 0, 4);
        assertThat(drain()).containsExactly(new ClientFlags(3));
        feed(bytes, 4, 4 + 15); // one byte short of an option header
        assertThat(drain()).isEmpty();
        feed(bytes, 4 + 15, bytes.length);
        assertThat(drain()).containsExactlyElementsOf(EXPECTED.subList(1, EXPECTED.size()));
    }

    @Test
    void wrongOptionMagicIsFatal() {
        ByteBuf b = Unpooled.buffer();
        b.writeInt(1);
        b.writeLong(Magic.IHAVEOPT ^ 1);
        b.writeInt(OptionType.LIST);
        b.writeInt(0);
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b))
                .isInstanceOf(CorruptedFrameException.class)
                .hasMessageContaining("IHAVEOPT");
    }

    @Test
    void nothingIsDecodedAfterAFatalError() {
        // Once framing is lost, later bytes must not become options, neither in later reads
        // nor when the decoder drains its input as the channel closes.
        ByteBuf b = Unpooled.buffer();
        b.writeInt(1);
        b.writeLong(0x4142434445464748L);
        b.writeBytes(optionBytes(OptionType.EXPORT_NAME, "disk".getBytes(StandardCharsets.UTF_8)));
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b)).isInstanceOf(CorruptedFrameException.class);
        assertThat(drain()).containsExactly(new ClientFlags(1));
        byte[] more = optionBytes(OptionType.GO, new byte[0]);
        feed(more, 0, more.length);
        assertThat(drain()).isEmpty();
        channel.finish();
        assertThat(drain()).isEmpty();
    }

    @Test
    void oversizedOptionIsSkippedAndTheNextOneDecodes() {
        int size = 1024 * 1024;
        ByteBuf start = Unpooled.buffer();
        start.writeInt(1);
        start.writeLong(Magic.IHAVEOPT);
        start.writeInt(OptionType.GO);
        start.writeInt(size);
        fed.add(start);
        channel.writeInbound(start);
        assertThat(drain()).containsExactly(new ClientFlags(1), new OptionRequest.Oversized(OptionType.GO, size));

        byte[] piece = new byte[64 * 1024];
        for (int sent = 0; sent < size; sent += piece.length) {
            ByteBuf buf = Unpooled.copiedBuffer(piece);
            fed.add(buf);
            channel.writeInbound(buf);
            // Skipped bytes are dropped as they arrive: the decoder keeps no cumulation of them.
            assertThat(buf.refCnt()).as("piece at %d released right away", sent).isZero();
            assertThat(drain()).isEmpty();
        }
        ByteBuf next = Unpooled.wrappedBuffer(optionBytes(OptionType.LIST, new byte[0]));
        fed.add(next);
        channel.writeInbound(next);
        assertThat(drain()).containsExactly(new OptionRequest.ListExports());
    }

    @Test
    void optionJustAtTheLimitIsBufferedAndParsed() {
        byte[] data = new byte[Limits.MAX_OPTION_DATA];
        byte[] bytes = optionBytes(OptionType.LIST, data);
        ByteBuf flags = Unpooled.buffer().writeInt(1);
        fed.add(flags);
        channel.writeInbound(flags);
        feed(bytes, 0, bytes.length);
        assertThat(drain()).containsExactly(new ClientFlags(1),
                new OptionRequest.Malformed(OptionType.LIST, "NBD_OPT_LIST must not carry data, got 65536 bytes"));
    }

    @Test
    void oversizedOptionSplitAcrossTheNextHeaderStillDecodes() {
        int size = Limits.MAX_OPTION_DATA + 1;
        ByteBuf b = Unpooled.buffer();
        b.writeInt(1);
        option(b, 77, Unpooled.wrappedBuffer(new byte[size]));
        b.writeBytes(optionBytes(OptionType.EXPORT_NAME, "disk".getBytes(StandardCharsets.UTF_8)));
        byte[] bytes = new byte[b.readableBytes()];
        b.readBytes(bytes);
        Random random = new Random(7);
        int at = 0;
        while (at < bytes.length) {
            int next = Math.min(bytes.length, at + 1 + random.nextInt(5000));
            feed(bytes, at, next);
            at = next;
        }
        assertThat(drain()).containsExactly(new ClientFlags(1), new OptionRequest.Oversized(77, size),
                new OptionRequest.ExportName("disk"));
    }

    @Test
    void oversizedExportNameIsFatal() {
        ByteBuf b = Unpooled.buffer();
        b.writeInt(1);
        b.writeLong(Magic.IHAVEOPT);
        b.writeInt(OptionType.EXPORT_NAME);
        b.writeInt(Limits.MAX_OPTION_DATA + 1);
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b))
                .isInstanceOf(CorruptedFrameException.class)
                .hasMessageContaining("NBD_OPT_EXPORT_NAME");
    }

    @Test
    void lengthWithTheTopBitSetIsOversizedNotNegative() {
        ByteBuf b = Unpooled.buffer();
        b.writeInt(1);
        b.writeLong(Magic.IHAVEOPT);
        b.writeInt(OptionType.INFO);
        b.writeInt(0xFFFFFFFF);
        fed.add(b);
        channel.writeInbound(b);
        assertThat(drain()).containsExactly(new ClientFlags(1), new OptionRequest.Oversized(OptionType.INFO, 0xFFFFFFFFL));
    }
}
