package io.kubenbd.node.protocol;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.TooLongFrameException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/** Transmission request framing, compact and extended, with attention to payloads and buffer lifetimes. */
class RequestDecoderTest {
    private static final int FUA = CommandFlags.FUA;
    private static final int PAYLOAD_LEN = CommandFlags.PAYLOAD_LEN;

    private EmbeddedChannel channel;
    private final List<ByteBuf> fed = new ArrayList<>();
    private final List<ByteBuf> payloads = new ArrayList<>();

    @AfterEach
    void noLeaks() {
        if (channel != null) {
            channel.finishAndReleaseAll();
        }
        assertThat(payloads).allSatisfy(p -> assertThat(p.refCnt()).as("write payload released").isZero());
        assertThat(fed).allSatisfy(b -> assertThat(b.refCnt()).as("input buffer released").isZero());
    }

    private void open(boolean extended) {
        channel = new EmbeddedChannel(new RequestDecoder(extended));
    }

    // --- wire helpers --------------------------------------------------------------------

    static byte[] compact(int flags, int type, long cookie, long offset, long length, byte[] payload) {
        ByteBuf b = Unpooled.buffer();
        b.writeInt(Magic.REQUEST);
        b.writeShort(flags);
        b.writeShort(type);
        b.writeLong(cookie);
        b.writeLong(offset);
        b.writeInt((int) length);
        b.writeBytes(payload);
        return ByteBufUtil.getBytes(b);
    }

    static byte[] compact(int flags, int type, long cookie, long offset, long length) {
        return compact(flags, type, cookie, offset, length, new byte[0]);
    }

    static byte[] extended(int flags, int type, long cookie, long offset, long length, byte[] payload) {
        ByteBuf b = Unpooled.buffer();
        b.writeInt(Magic.EXTENDED_REQUEST);
        b.writeShort(flags);
        b.writeShort(type);
        b.writeLong(cookie);
        b.writeLong(offset);
        b.writeLong(length);
        b.writeBytes(payload);
        return ByteBufUtil.getBytes(b);
    }

    static byte[] extended(int flags, int type, long cookie, long offset, long length) {
        return extended(flags, type, cookie, offset, length, new byte[0]);
    }

    static byte[] concat(byte[]... parts) {
        ByteBuf b = Unpooled.buffer();
        for (byte[] p : parts) {
            b.writeBytes(p);
        }
        return ByteBufUtil.getBytes(b);
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private void feed(byte[] bytes) {
        feed(Unpooled.wrappedBuffer(bytes));
    }

    private void feed(ByteBuf buf) {
        fed.add(buf);
        channel.writeInbound(buf);
    }

    private List<Request> drain() {
        List<Request> messages = new ArrayList<>();
        Object m;
        while ((m = channel.readInbound()) != null) {
            messages.add((Request) m);
            if (m instanceof Request.Write w) {
                payloads.add(w.data());
            }
        }
        return messages;
    }

    private Request single() {
        List<Request> messages = drain();
        assertThat(messages).hasSize(1);
        return messages.getFirst();
    }

    /** A comparable text form: write payloads as hex, block status ids as a list. Releases writes. */
    private static String describe(Request r) {
        return switch (r) {
            case Request.Write w -> {
                String s = "Write" + w.header() + " " + ByteBufUtil.hexDump(w.data());
                w.release();
                yield s;
            }
            case Request.BlockStatus b -> "BlockStatus" + b.header() + " effect=" + b.effectLength()
                    + " ids=" + Arrays.toString(b.contextIds());
            default -> r.toString();
        };
    }

    private static void assertInvalid(Request r, RequestHeader header, String reasonPart) {
        assertThat(r).isInstanceOf(Request.Invalid.class);
        Request.Invalid invalid = (Request.Invalid) r;
        assertThat(invalid.header()).isEqualTo(header);
        assertThat(invalid.error()).isEqualTo(NbdError.EINVAL);
        assertThat(invalid.reason()).contains(reasonPart);
    }

    // --- headers -------------------------------------------------------------------------

    @Test
    void compactHeaderFieldsAreUnsigned() {
        open(false);
        feed(compact(FUA | CommandFlags.NO_HOLE, CommandType.READ, 0xFEDCBA9876543210L, 0x8000000000000000L, 0xFFFFFFFFL));
        assertThat(single()).isEqualTo(new Request.Read(new RequestHeader(
                FUA | CommandFlags.NO_HOLE, CommandType.READ, 0xFEDCBA9876543210L, 0x8000000000000000L, 0xFFFFFFFFL)));
    }

    @Test
    void extendedHeaderHasA64BitLength() {
        open(true);
        feed(extended(0, CommandType.TRIM, 7, 4096, 1L << 40));
        assertThat(single()).isEqualTo(new Request.Trim(new RequestHeader(0, CommandType.TRIM, 7, 4096, 1L << 40)));
    }

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void everyCommandWithoutPayloadMapsToItsRecord(boolean ext) {
        open(ext);
        for (int type : new int[] {CommandType.READ, CommandType.DISC, CommandType.FLUSH, CommandType.TRIM,
                CommandType.CACHE, CommandType.WRITE_ZEROES, CommandType.BLOCK_STATUS}) {
            feed(ext ? extended(0, type, type, 512, 1024) : compact(0, type, type, 512, 1024));
        }
        List<Request> got = drain();
        RequestHeader[] h = new RequestHeader[8];
        for (int t = 0; t < 8; t++) {
            h[t] = new RequestHeader(0, t, t, 512, 1024);
        }
        assertThat(got).hasSize(7);
        assertThat(got.subList(0, 6)).containsExactly(
                new Request.Read(h[CommandType.READ]), new Request.Disconnect(h[CommandType.DISC]),
                new Request.Flush(h[CommandType.FLUSH]), new Request.Trim(h[CommandType.TRIM]),
                new Request.Cache(h[CommandType.CACHE]), new Request.WriteZeroes(h[CommandType.WRITE_ZEROES]));
        Request.BlockStatus bs = (Request.BlockStatus) got.get(6);
        assertThat(bs.header()).isEqualTo(h[CommandType.BLOCK_STATUS]);
        assertThat(bs.effectLength()).isEqualTo(1024);
        assertThat(bs.payloadForm()).isFalse();
    }

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void unknownCommandIsInvalid(boolean ext) {
        open(ext);
        feed(ext ? extended(0, 8, 1, 0, 0) : compact(0, 8, 1, 0, 0));
        feed(ext ? extended(0, 0xFFFF, 2, 0, 0) : compact(0, 0xFFFF, 2, 0, 0));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        assertInvalid(got.get(0), new RequestHeader(0, 8, 1, 0, 0), "unknown command 8");
        assertInvalid(got.get(1), new RequestHeader(0, 0xFFFF, 2, 0, 0), "unknown command 65535");
    }

    @Test
    void compactBadMagicIsFatal() {
        open(false);
        ByteBuf b = Unpooled.wrappedBuffer(extended(0, CommandType.READ, 1, 0, 512));
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b))
                .isInstanceOf(CorruptedFrameException.class)
                .hasMessageContaining("0x21e41c71").hasMessageContaining("expected 0x25609513");
    }

    @Test
    void extendedBadMagicIsFatal() {
        open(true);
        ByteBuf b = Unpooled.wrappedBuffer(concat(compact(0, CommandType.READ, 1, 0, 512), new byte[4]));
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b))
                .isInstanceOf(CorruptedFrameException.class)
                .hasMessageContaining("expected 0x21e41c71");
    }

    @Test
    void nothingIsDecodedAfterABadMagic() {
        // After a framing error the stream position is unknown: the bytes that follow must not become requests,
        // neither in later reads before the channel closes nor when the decoder drains on close.
        open(false);
        ByteBuf b = Unpooled.wrappedBuffer(concat(bytes("XXXX"), compact(0, CommandType.WRITE, 1, 0, 4, bytes("evil"))));
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b)).isInstanceOf(CorruptedFrameException.class);
        feed(compact(0, CommandType.TRIM, 2, 0, 4096));
        assertThat(drain()).isEmpty();
        channel.finish();
        assertThat(drain()).isEmpty();
    }

    @Test
    void payloadOfARejectedExtendedRequestIsNotDecodedAsRequests() {
        open(true);
        byte[] smuggled = extended(0, CommandType.WRITE_ZEROES, 2, 0, 1L << 30);
        ByteBuf b = Unpooled.wrappedBuffer(concat(extended(PAYLOAD_LEN, CommandType.WRITE, 1, 0, 1L << 26), smuggled));
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b)).isInstanceOf(TooLongFrameException.class);
        feed(smuggled);
        assertThat(drain()).isEmpty();
        channel.finish();
        assertThat(drain()).isEmpty();
    }

    // --- writes --------------------------------------------------------------------------

    @Test
    void compactWritePayloadIsSlicedWithItsContent() {
        open(false);
        feed(concat(compact(FUA, CommandType.WRITE, 9, 4096, 5, bytes("hello")),
                compact(0, CommandType.FLUSH, 10, 0, 0)));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        Request.Write w = (Request.Write) got.get(0);
        assertThat(w.header()).isEqualTo(new RequestHeader(FUA, CommandType.WRITE, 9, 4096, 5));
        assertThat(w.data().toString(StandardCharsets.UTF_8)).isEqualTo("hello");
        assertThat(w.refCnt()).isPositive();
        assertThat(w.release()).isTrue();
        assertThat(got.get(1)).isEqualTo(new Request.Flush(new RequestHeader(0, CommandType.FLUSH, 10, 0, 0)));
    }

    @Test
    void zeroLengthWriteHasAnEmptyPayload() {
        open(false);
        feed(concat(compact(0, CommandType.WRITE, 1, 0, 0), compact(0, CommandType.DISC, 2, 0, 0)));
        List<Request> got = drain();
        assertThat(((Request.Write) got.get(0)).data().readableBytes()).isZero();
        ((Request.Write) got.get(0)).release();
        assertThat(got.get(1)).isInstanceOf(Request.Disconnect.class);
    }

    @ParameterizedTest
    @ValueSource(ints = {0, PAYLOAD_LEN})
    void extendedWriteCarriesItsPayloadWithOrWithoutPayloadLen(int flags) {
        // qemu 10's client sends extended WRITEs without NBD_CMD_FLAG_PAYLOAD_LEN.
        open(true);
        feed(concat(extended(flags, CommandType.WRITE, 3, 1L << 33, 6, bytes("abcdef")),
                extended(0, CommandType.READ, 4, 0, 512)));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        Request.Write w = (Request.Write) got.get(0);
        assertThat(w.header()).isEqualTo(new RequestHeader(flags, CommandType.WRITE, 3, 1L << 33, 6));
        assertThat(w.data().toString(StandardCharsets.UTF_8)).isEqualTo("abcdef");
        w.release();
        assertThat(got.get(1)).isEqualTo(new Request.Read(new RequestHeader(0, CommandType.READ, 4, 0, 512)));
    }

    @Test
    void writeOfExactlyTheMaximumIsDelivered() {
        open(false);
        byte[] payload = new byte[Limits.MAX_PAYLOAD];
        payload[payload.length - 1] = 42;
        feed(compact(0, CommandType.WRITE, 1, 0, payload.length));
        assertThat(drain()).isEmpty();
        feed(payload);
        Request.Write w = (Request.Write) single();
        assertThat(w.data().readableBytes()).isEqualTo(Limits.MAX_PAYLOAD);
        assertThat(w.data().getByte(Limits.MAX_PAYLOAD - 1)).isEqualTo((byte) 42);
        w.release();
    }

    @Test
    void compactWriteOverTheMaximumIsSkippedAsItStreams() {
        open(false);
        long length = 33L * 1024 * 1024;
        feed(compact(FUA, CommandType.WRITE, 77, 0, length));
        byte[] mib = new byte[1024 * 1024];
        for (long sent = 0; sent < length; sent += mib.length) {
            assertThat(drain()).as("nothing before the payload ends").isEmpty();
            ByteBuf piece = Unpooled.wrappedBuffer(mib);
            feed(piece);
            assertThat(piece.refCnt()).as("skipped piece at %d not held", sent).isZero();
        }
        assertInvalid(single(), new RequestHeader(FUA, CommandType.WRITE, 77, 0, length), "exceeds the maximum");
        feed(compact(0, CommandType.READ, 78, 0, 512));
        assertThat(single()).isEqualTo(new Request.Read(new RequestHeader(0, CommandType.READ, 78, 0, 512)));
    }

    @Test
    void compactOversizedWriteFollowedByARequestInTheSameBuffer() {
        open(false);
        int length = Limits.MAX_PAYLOAD + 1;
        feed(concat(compact(0, CommandType.WRITE, 1, 0, length), new byte[length],
                compact(0, CommandType.FLUSH, 2, 0, 0)));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        assertInvalid(got.get(0), new RequestHeader(0, CommandType.WRITE, 1, 0, length), "exceeds");
        assertThat(got.get(1)).isEqualTo(new Request.Flush(new RequestHeader(0, CommandType.FLUSH, 2, 0, 0)));
    }

    @ParameterizedTest
    @CsvSource({"1, 33554433", "1, -1", "7, 33554433", "0, 1099511627776"})
    void extendedPayloadOverTheMaximumIsFatal(int type, long length) {
        open(true);
        ByteBuf b = Unpooled.wrappedBuffer(extended(PAYLOAD_LEN, type, 1, 0, length));
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b))
                .isInstanceOf(TooLongFrameException.class)
                .hasMessageContaining("exceeds the maximum of 33554432");
    }

    @Test
    void extendedWriteOverTheMaximumWithoutPayloadLenIsFatalToo() {
        open(true);
        ByteBuf b = Unpooled.wrappedBuffer(extended(0, CommandType.WRITE, 1, 0, Limits.MAX_PAYLOAD + 1L));
        fed.add(b);
        assertThatThrownBy(() -> channel.writeInbound(b)).isInstanceOf(TooLongFrameException.class);
    }

    // --- NBD_CMD_FLAG_PAYLOAD_LEN --------------------------------------------------------

    @Test
    void payloadLenOnACompactRequestIsInvalid() {
        open(false);
        feed(concat(compact(PAYLOAD_LEN, CommandType.READ, 1, 0, 512), compact(0, CommandType.FLUSH, 2, 0, 0)));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        assertInvalid(got.get(0), new RequestHeader(PAYLOAD_LEN, CommandType.READ, 1, 0, 512), "without extended headers");
        assertThat(got.get(1)).isInstanceOf(Request.Flush.class);
    }

    @Test
    void payloadLenOnACompactWriteIsInvalidAndItsPayloadConsumed() {
        open(false);
        feed(concat(compact(PAYLOAD_LEN, CommandType.WRITE, 1, 0, 4, bytes("data")),
                compact(0, CommandType.FLUSH, 2, 0, 0)));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        assertInvalid(got.get(0), new RequestHeader(PAYLOAD_LEN, CommandType.WRITE, 1, 0, 4), "without extended headers");
        assertThat(got.get(1)).isEqualTo(new Request.Flush(new RequestHeader(0, CommandType.FLUSH, 2, 0, 0)));
    }

    @Test
    void blockStatusPayloadForm() {
        open(true);
        ByteBuf payload = Unpooled.buffer();
        payload.writeLong(1L << 30);
        payload.writeInt(1);
        payload.writeInt(0xFFFFFFFE);
        feed(concat(extended(PAYLOAD_LEN | CommandFlags.REQ_ONE, CommandType.BLOCK_STATUS, 5, 8192, 16,
                ByteBufUtil.getBytes(payload)), extended(0, CommandType.DISC, 6, 0, 0)));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        Request.BlockStatus bs = (Request.BlockStatus) got.get(0);
        assertThat(bs.header()).isEqualTo(new RequestHeader(PAYLOAD_LEN | CommandFlags.REQ_ONE,
                CommandType.BLOCK_STATUS, 5, 8192, 16));
        assertThat(bs.payloadForm()).isTrue();
        assertThat(bs.effectLength()).isEqualTo(1L << 30);
        assertThat(bs.contextIds()).containsExactly(1, 0xFFFFFFFE);
        assertThat(got.get(1)).isInstanceOf(Request.Disconnect.class);
    }

    @Test
    void blockStatusPayloadWithNoIdsIsJustTheEffectLength() {
        open(true);
        feed(extended(PAYLOAD_LEN, CommandType.BLOCK_STATUS, 5, 0, 8, new byte[] {0, 0, 0, 0, 0, 0, 2, 0}));
        Request.BlockStatus bs = (Request.BlockStatus) single();
        assertThat(bs.effectLength()).isEqualTo(512);
        assertThat(bs.contextIds()).isEmpty();
        assertThat(bs.payloadForm()).isTrue();
    }

    @ParameterizedTest
    @ValueSource(ints = {0, 4, 7, 9, 10, 13, 15})
    void blockStatusPayloadOfABadSizeIsInvalidAndConsumed(int size) {
        open(true);
        feed(concat(extended(PAYLOAD_LEN, CommandType.BLOCK_STATUS, 1, 0, size, new byte[size]),
                extended(0, CommandType.FLUSH, 2, 0, 0)));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        assertInvalid(got.get(0), new RequestHeader(PAYLOAD_LEN, CommandType.BLOCK_STATUS, 1, 0, size), "is not 8 + 4n");
        assertThat(got.get(1)).isEqualTo(new Request.Flush(new RequestHeader(0, CommandType.FLUSH, 2, 0, 0)));
    }

    @ParameterizedTest
    @ValueSource(ints = {CommandType.READ, CommandType.DISC, CommandType.FLUSH, CommandType.TRIM, CommandType.CACHE,
            CommandType.WRITE_ZEROES, 12})
    void otherCommandsWithPayloadLenAreInvalidAndTheirPayloadConsumed(int type) {
        open(true);
        feed(concat(extended(PAYLOAD_LEN, type, 1, 0, 3, bytes("xyz")), extended(0, CommandType.FLUSH, 2, 0, 0)));
        List<Request> got = drain();
        assertThat(got).hasSize(2);
        assertInvalid(got.get(0), new RequestHeader(PAYLOAD_LEN, type, 1, 0, 3), "takes no payload");
        assertThat(got.get(1)).isEqualTo(new Request.Flush(new RequestHeader(0, CommandType.FLUSH, 2, 0, 0)));
    }

    // --- fragmentation -------------------------------------------------------------------

    private static byte[] compactSession() {
        byte[] data = new byte[100];
        for (int i = 0; i < data.length; i++) {
            data[i] = (byte) (i * 7);
        }
        return concat(
                compact(0, CommandType.READ, 1, 0, 4096),
                compact(FUA, CommandType.WRITE, 2, 512, data.length, data),
                compact(0, CommandType.TRIM, 3, 0, 1 << 20),
                compact(0, CommandType.WRITE, 4, 0, 0),
                compact(PAYLOAD_LEN, CommandType.WRITE, 5, 0, 3, bytes("bad")),
                compact(0, 99, 6, 0, 0),
                compact(CommandFlags.REQ_ONE, CommandType.BLOCK_STATUS, 7, 0, 65536),
                compact(0, CommandType.WRITE, 8, 0, 2, bytes("ok")),
                compact(0, CommandType.DISC, 9, 0, 0));
    }

    private static byte[] extendedSession() {
        ByteBuf bs = Unpooled.buffer().writeLong(1 << 20).writeInt(1).writeInt(2);
        return concat(
                extended(0, CommandType.READ, 1, 0, 4096),
                extended(PAYLOAD_LEN, CommandType.WRITE, 2, 512, 5, bytes("12345")),
                extended(0, CommandType.WRITE, 3, 1024, 4, bytes("6789")),
                extended(PAYLOAD_LEN, CommandType.BLOCK_STATUS, 4, 0, 16, ByteBufUtil.getBytes(bs)),
                extended(PAYLOAD_LEN, CommandType.BLOCK_STATUS, 5, 0, 5, bytes("short")),
                extended(PAYLOAD_LEN, CommandType.TRIM, 6, 0, 2, bytes("no")),
                extended(0, CommandType.WRITE_ZEROES, 7, 0, 1L << 35),
                extended(0, CommandType.DISC, 8, 0, 0));
    }

    private List<String> decodeWhole(boolean ext) {
        open(ext);
        feed(ext ? extendedSession() : compactSession());
        List<String> described = drain().stream().map(RequestDecoderTest::describe).toList();
        channel.finishAndReleaseAll();
        return described;
    }

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void oneByteAtATimeGivesTheSameRequests(boolean ext) {
        List<String> expected = decodeWhole(ext);
        assertThat(expected).hasSize(ext ? 8 : 9);
        open(ext);
        byte[] session = ext ? extendedSession() : compactSession();
        List<String> got = new ArrayList<>();
        for (byte b : session) {
            feed(new byte[] {b});
            drain().forEach(r -> got.add(describe(r)));
        }
        assertThat(got).containsExactlyElementsOf(expected);
    }

    @ParameterizedTest
    @CsvSource({"false, 1", "false, 2", "false, 99", "true, 1", "true, 2", "true, 99"})
    void randomSplitsGiveTheSameRequests(boolean ext, long seed) {
        List<String> expected = decodeWhole(ext);
        open(ext);
        byte[] session = ext ? extendedSession() : compactSession();
        Random random = new Random(seed);
        List<String> got = new ArrayList<>();
        int at = 0;
        while (at < session.length) {
            int next = Math.min(session.length, at + 1 + random.nextInt(60));
            feed(Unpooled.copiedBuffer(session, at, next - at));
            drain().forEach(r -> got.add(describe(r)));
            at = next;
        }
        assertThat(got).containsExactlyElementsOf(expected);
    }

    @Test
    void heldWritePayloadSurvivesLaterInput() {
        // The handler may keep a payload while more bytes arrive; the slice must stay intact.
        open(false);
        feed(compact(0, CommandType.WRITE, 1, 0, 4, bytes("keep")));
        Request.Write w = (Request.Write) single();
        for (int i = 0; i < 10; i++) {
            feed(compact(0, CommandType.WRITE, 2 + i, 0, 4, bytes("junk")));
            ((Request.Write) single()).release();
        }
        assertThat(w.data().toString(StandardCharsets.UTF_8)).isEqualTo("keep");
        w.release();
    }
}
