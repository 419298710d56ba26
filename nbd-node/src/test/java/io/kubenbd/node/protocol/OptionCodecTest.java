package io.kubenbd.node.protocol;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/** Option data parsing (server side) and encoding (client side). */
class OptionCodecTest {

    private static ByteBuf data(Consumer<ByteBuf> writer) {
        ByteBuf b = Unpooled.buffer();
        writer.accept(b);
        return b;
    }

    private static void string32(ByteBuf b, byte[] bytes) {
        b.writeInt(bytes.length);
        b.writeBytes(bytes);
    }

    private static void string32(ByteBuf b, String s) {
        string32(b, s.getBytes(StandardCharsets.UTF_8));
    }

    private static OptionRequest parse(int option, ByteBuf data) {
        return OptionCodec.parse(option, data);
    }

    private static void assertMalformed(int option, ByteBuf data, String reasonPart) {
        OptionRequest parsed = parse(option, data);
        assertThat(parsed).isInstanceOf(OptionRequest.Malformed.class);
        OptionRequest.Malformed m = (OptionRequest.Malformed) parsed;
        assertThat(m.option()).isEqualTo(option);
        assertThat(m.reason()).contains(reasonPart);
    }

    // --- well-formed options -----------------------------------------------------------

    @Test
    void exportNameIsTheWholeData() {
        assertThat(parse(OptionType.EXPORT_NAME, Unpooled.copiedBuffer("dïsk ✓", StandardCharsets.UTF_8)))
                .isEqualTo(new OptionRequest.ExportName("dïsk ✓"));
        assertThat(parse(OptionType.EXPORT_NAME, Unpooled.EMPTY_BUFFER)).isEqualTo(new OptionRequest.ExportName(""));
    }

    @Test
    void noDataOptions() {
        assertThat(parse(OptionType.ABORT, Unpooled.EMPTY_BUFFER)).isEqualTo(new OptionRequest.Abort());
        assertThat(parse(OptionType.LIST, Unpooled.EMPTY_BUFFER)).isEqualTo(new OptionRequest.ListExports());
        assertThat(parse(OptionType.STARTTLS, Unpooled.EMPTY_BUFFER)).isEqualTo(new OptionRequest.StartTls());
        assertThat(parse(OptionType.STRUCTURED_REPLY, Unpooled.EMPTY_BUFFER)).isEqualTo(new OptionRequest.StructuredReply());
        assertThat(parse(OptionType.EXTENDED_HEADERS, Unpooled.EMPTY_BUFFER)).isEqualTo(new OptionRequest.ExtendedHeaders());
    }

    @Test
    void infoAndGo() {
        ByteBuf info = data(b -> {
            string32(b, "disk");
            b.writeShort(3);
            b.writeShort(InfoType.NAME);
            b.writeShort(InfoType.BLOCK_SIZE);
            b.writeShort(0xFFFF);
        });
        assertThat(parse(OptionType.INFO, info))
                .isEqualTo(new OptionRequest.Info(false, "disk", List.of(InfoType.NAME, InfoType.BLOCK_SIZE, 0xFFFF)));
        ByteBuf go = data(b -> {
            string32(b, "");
            b.writeShort(0);
        });
        assertThat(parse(OptionType.GO, go)).isEqualTo(new OptionRequest.Info(true, "", List.of()));
    }

    @Test
    void listAndSetMetaContext() {
        ByteBuf list = data(b -> {
            string32(b, "disk");
            b.writeInt(2);
            string32(b, "base:");
            string32(b, "qemu:");
        });
        assertThat(parse(OptionType.LIST_META_CONTEXT, list))
                .isEqualTo(new OptionRequest.MetaContext(false, "disk", List.of("base:", "qemu:")));
        ByteBuf set = data(b -> {
            string32(b, "disk");
            b.writeInt(1);
            string32(b, "base:allocation");
        });
        assertThat(parse(OptionType.SET_META_CONTEXT, set))
                .isEqualTo(new OptionRequest.MetaContext(true, "disk", List.of("base:allocation")));
        ByteBuf none = data(b -> {
            string32(b, "disk");
            b.writeInt(0);
        });
        assertThat(parse(OptionType.LIST_META_CONTEXT, none))
                .isEqualTo(new OptionRequest.MetaContext(false, "disk", List.of()));
    }

    @ParameterizedTest
    @ValueSource(ints = {0, 4, 12, 99, 0x7FFFFFFF, 0x80000000})
    void unknownOptionIsUnsupported(int option) {
        assertThat(parse(option, Unpooled.wrappedBuffer(new byte[] {1, 2, 3}))).isEqualTo(new OptionRequest.Unsupported(option));
        assertThat(parse(option, Unpooled.EMPTY_BUFFER)).isEqualTo(new OptionRequest.Unsupported(option));
    }

    // --- malformed options -------------------------------------------------------------

    @ParameterizedTest
    @ValueSource(ints = {OptionType.LIST, OptionType.STARTTLS, OptionType.STRUCTURED_REPLY, OptionType.EXTENDED_HEADERS})
    void noDataOptionsWithDataAreMalformed(int option) {
        assertMalformed(option, Unpooled.wrappedBuffer(new byte[] {0}), "must not carry data, got 1 bytes");
    }

    @ParameterizedTest
    @ValueSource(ints = {OptionType.INFO, OptionType.GO})
    void infoNameLengthBeyondTheData(int option) {
        ByteBuf d = data(b -> {
            b.writeInt(5);
            b.writeBytes("disk".getBytes(StandardCharsets.UTF_8));
        });
        assertMalformed(option, d, "export name length 5 exceeds");
        assertMalformed(option, data(b -> b.writeInt(0xFFFFFFFF)), "export name length 4294967295 exceeds");
    }

    @ParameterizedTest
    @ValueSource(ints = {OptionType.INFO, OptionType.GO})
    void infoCountNotMatchingTheData(int option) {
        assertMalformed(option, data(b -> {
            string32(b, "disk");
            b.writeShort(2);
            b.writeShort(InfoType.NAME);
        }), "count 2 does not match 2 remaining bytes");
        assertMalformed(option, data(b -> {
            string32(b, "disk");
            b.writeShort(0);
            b.writeByte(1);
        }), "count 0 does not match 1 remaining bytes");
        assertMalformed(option, data(b -> string32(b, "disk")), "ends before the information request count");
        assertMalformed(option, data(b -> b.writeShort(0)), "ends before the export name length");
    }

    @ParameterizedTest
    @ValueSource(ints = {OptionType.LIST_META_CONTEXT, OptionType.SET_META_CONTEXT})
    void hugeQueryCountDoesNotAllocate(int option) {
        for (long count : new long[] {0xFFFFFFFFL, 0x7FFFFFFFL, 0x10000000L, 3}) {
            ByteBuf d = data(b -> {
                string32(b, "disk");
                b.writeInt((int) count);
                string32(b, "base:");
            });
            OptionRequest parsed = assertTimeoutPreemptively(Duration.ofMillis(500), () -> parse(option, d));
            assertThat(parsed).isEqualTo(new OptionRequest.Malformed(option,
                    "query count " + count + " exceeds the option length"));
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {OptionType.LIST_META_CONTEXT, OptionType.SET_META_CONTEXT})
    void queryLengthBeyondTheData(int option) {
        assertMalformed(option, data(b -> {
            string32(b, "disk");
            b.writeInt(2);
            string32(b, "base:");
            b.writeInt(100);
            b.writeBytes(new byte[4]);
        }), "query length 100 exceeds");
        // A count that fits a 4-byte length each but runs out of data before the second length.
        assertMalformed(option, data(b -> {
            string32(b, "disk");
            b.writeInt(2);
            string32(b, "base:allocation");
        }), "ends before the query length");
    }

    @ParameterizedTest
    @ValueSource(ints = {OptionType.LIST_META_CONTEXT, OptionType.SET_META_CONTEXT})
    void trailingBytesAfterTheQueries(int option) {
        assertMalformed(option, data(b -> {
            string32(b, "disk");
            b.writeInt(1);
            string32(b, "base:");
            b.writeByte(0);
        }), "1 unexpected bytes after the queries");
        assertMalformed(option, data(b -> string32(b, "disk")), "ends before the query count");
    }

    static Stream<Object[]> invalidUtf8() {
        byte[] bad = {'d', (byte) 0xC3, 'x'}; // a lead byte without its continuation
        byte[] overlong = {(byte) 0xC0, (byte) 0xAF}; // overlong encoding of '/'
        return Stream.of(
                new Object[] {OptionType.EXPORT_NAME, Unpooled.wrappedBuffer(bad)},
                new Object[] {OptionType.EXPORT_NAME, Unpooled.wrappedBuffer(overlong)},
                new Object[] {OptionType.GO, data(b -> { string32(b, bad); b.writeShort(0); })},
                new Object[] {OptionType.INFO, data(b -> { string32(b, overlong); b.writeShort(0); })},
                new Object[] {OptionType.SET_META_CONTEXT, data(b -> { string32(b, bad); b.writeInt(0); })},
                new Object[] {OptionType.LIST_META_CONTEXT, data(b -> {
                    string32(b, "disk");
                    b.writeInt(1);
                    string32(b, bad);
                })});
    }

    @ParameterizedTest
    @MethodSource("invalidUtf8")
    void invalidUtf8IsMalformed(int option, ByteBuf d) {
        assertMalformed(option, d, "not valid UTF-8");
    }

    static Stream<Object[]> tooLongStrings() {
        String longName = "x".repeat(Limits.MAX_STRING + 1);
        return Stream.of(
                new Object[] {OptionType.EXPORT_NAME, Unpooled.copiedBuffer(longName, StandardCharsets.UTF_8)},
                new Object[] {OptionType.GO, data(b -> { string32(b, longName); b.writeShort(0); })},
                new Object[] {OptionType.SET_META_CONTEXT, data(b -> { string32(b, longName); b.writeInt(0); })},
                new Object[] {OptionType.LIST_META_CONTEXT, data(b -> {
                    string32(b, "disk");
                    b.writeInt(1);
                    string32(b, longName);
                })});
    }

    @ParameterizedTest
    @MethodSource("tooLongStrings")
    void stringsOver4096BytesAreMalformed(int option, ByteBuf d) {
        assertMalformed(option, d, "string of 4097 bytes exceeds 4096");
    }

    @Test
    void stringOfExactly4096BytesIsAccepted() {
        String name = "é".repeat(Limits.MAX_STRING / 2); // 2 bytes each
        assertThat(parse(OptionType.GO, data(b -> { string32(b, name); b.writeShort(0); })))
                .isEqualTo(new OptionRequest.Info(true, name, List.of()));
        assertThat(parse(OptionType.EXPORT_NAME, Unpooled.copiedBuffer(name + "é", StandardCharsets.UTF_8)))
                .isInstanceOf(OptionRequest.Malformed.class);
    }

    // --- encoding ------------------------------------------------------------------------

    static Stream<OptionRequest> encodable() {
        return Stream.of(
                new OptionRequest.ExportName("dïsk"),
                new OptionRequest.ExportName(""),
                new OptionRequest.Abort(),
                new OptionRequest.ListExports(),
                new OptionRequest.StartTls(),
                new OptionRequest.Info(false, "disk", List.of(InfoType.EXPORT, InfoType.NAME, InfoType.DESCRIPTION)),
                new OptionRequest.Info(true, "✓", List.of()),
                new OptionRequest.StructuredReply(),
                new OptionRequest.ExtendedHeaders(),
                new OptionRequest.MetaContext(false, "disk", List.of("base:", "qemu:dirty-bitmap:b")),
                new OptionRequest.MetaContext(true, "", List.of()),
                new OptionRequest.Unsupported(42));
    }

    @ParameterizedTest
    @MethodSource("encodable")
    void encodeThenParseGivesTheSameRequest(OptionRequest request) {
        ByteBuf out = Unpooled.buffer();
        OptionCodec.encode(request, out);
        assertThat(OptionCodec.parse(request.option(), out)).isEqualTo(request);
        assertThat(out.isReadable()).as("parse consumed all data").isFalse();
    }

    @Test
    void encodesInfoByteForByte() {
        ByteBuf out = Unpooled.buffer();
        OptionCodec.encode(new OptionRequest.Info(true, "ab", List.of(InfoType.BLOCK_SIZE)), out);
        byte[] bytes = new byte[out.readableBytes()];
        out.readBytes(bytes);
        assertThat(bytes).containsExactly(0, 0, 0, 2, 'a', 'b', 0, 1, 0, 3);
    }

    @Test
    void malformedAndOversizedCannotBeEncoded() {
        assertThatThrownBy(() -> OptionCodec.encode(new OptionRequest.Malformed(6, "x"), Unpooled.buffer()))
                .isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> OptionCodec.encode(new OptionRequest.Oversized(6, 1L << 20), Unpooled.buffer()))
                .isInstanceOf(IllegalArgumentException.class);
    }
}
