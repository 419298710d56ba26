package io.kubenbd.node.client;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.RequestHeader;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.lang.management.ManagementFactory;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The client's parsing of what a server sends, on arbitrary bytes: transmission replies to a
 * fixed set of requests in flight (the first byte chooses the reply style), and option
 * replies (the first byte chooses the option). The only failures allowed are
 * {@link NbdProtocolException} and {@link EOFException}; every reply must belong to a request
 * in flight and come once; the heap allocated stays in proportion to the input (the READs in
 * flight ask for at most {@link #READ_BYTES} bytes together). Seeds in
 * {@code ReplyReaderFuzzTestInputs/} are real servers' replies.
 */
class ReplyReaderFuzzTest {
    private static final long READ_BYTES = 1024 + 2048;
    /** Requests in flight, cookies 1 to 8; the seeds were captured from qemu-nbd answering a client's first requests. */
    private static final List<RequestHeader> REQUESTS = List.of(
            new RequestHeader(0, CommandType.READ, 1, 512, 1024),
            new RequestHeader(CommandFlags.DF, CommandType.READ, 2, 65536, 2048),
            new RequestHeader(0, CommandType.WRITE, 3, 0, 512),
            new RequestHeader(0, CommandType.FLUSH, 4, 0, 0),
            new RequestHeader(0, CommandType.TRIM, 5, 4096, 4096),
            new RequestHeader(0, CommandType.BLOCK_STATUS, 6, 0, 1 << 20),
            new RequestHeader(CommandFlags.REQ_ONE, CommandType.BLOCK_STATUS, 7, 512, 4096),
            new RequestHeader(0, CommandType.WRITE_ZEROES, 8, 8192, 8192));

    @FuzzTest(maxDuration = "30s")
    void replies(byte[] input) throws IOException {
        if (input.length == 0) {
            return;
        }
        readReplies(input); // loads (and under the fuzzer instruments) the classes: not counted
        long before = allocatedHeap();
        readReplies(input);
        bounded(before, input.length, READ_BYTES);
    }

    private static void readReplies(byte[] input) throws IOException {
        ReplyStyle style = ReplyStyle.values()[(input[0] & 0xff) % 3];
        ReplyReader reader = new ReplyReader(style, Set.of(0, 1, 2));
        REQUESTS.forEach(r -> reader.expect(r, null));
        DataInputStream in = stream(input);
        Set<Long> answered = new HashSet<>();
        try {
            while (true) {
                Reply reply = reader.read(in);
                if (!answered.add(reply.cookie()) || reply.cookie() < 1 || reply.cookie() > REQUESTS.size()) {
                    throw new AssertionError("a reply for cookie " + reply.cookie() + " after " + answered);
                }
            }
        } catch (NbdProtocolException | EOFException expected) {
            // The server broke the protocol, or the input ended.
        }
    }

    /** qemu-nbd's real replies (the seeds) must all be accepted: the checks are the spec's, not stricter. */
    @ParameterizedTest
    @ValueSource(strings = {"simple", "structured", "extended"})
    void qemuNbdsRepliesToTheRequestsInFlightAreAccepted(String style) throws IOException {
        byte[] seed;
        try (InputStream in = getClass().getResourceAsStream("ReplyReaderFuzzTestInputs/replies/" + style)) {
            seed = in.readAllBytes();
        }
        ReplyReader reader = new ReplyReader(ReplyStyle.valueOf(style.toUpperCase(Locale.ROOT)), Set.of(0, 1, 2));
        REQUESTS.forEach(r -> reader.expect(r, null));
        DataInputStream in = stream(seed);
        Set<Long> answered = new HashSet<>();
        for (int i = 0; i < REQUESTS.size(); i++) {
            answered.add(reader.read(in).cookie());
        }
        assertThat(answered).containsExactlyInAnyOrder(1L, 2L, 3L, 4L, 5L, 6L, 7L, 8L);
    }

    @FuzzTest(maxDuration = "30s")
    void optionReplies(byte[] input) throws IOException {
        if (input.length == 0) {
            return;
        }
        readOptionReplies(input);
        long before = allocatedHeap();
        readOptionReplies(input);
        bounded(before, input.length, 0);
    }

    private static void readOptionReplies(byte[] input) throws IOException {
        int[] options = {OptionType.LIST, OptionType.INFO, OptionType.GO, OptionType.STRUCTURED_REPLY,
                OptionType.EXTENDED_HEADERS, OptionType.SET_META_CONTEXT, OptionType.LIST_META_CONTEXT,
                OptionType.STARTTLS};
        int option = options[(input[0] & 0xff) % options.length];
        DataInputStream in = stream(input);
        int[] length = new int[1];
        try {
            for (int i = 0; i <= input.length / 20; i++) {
                NbdClient.readOptionReply(in, option, length);
            }
        } catch (NbdProtocolException | EOFException expected) {
            // The server broke the protocol, or the input ended.
        }
    }

    private static DataInputStream stream(byte[] input) {
        return new DataInputStream(new ByteArrayInputStream(input, 1, input.length - 1));
    }

    private static void bounded(long before, int inputLength, long requested) {
        long heap = allocatedHeap() - before;
        if (heap > (8L << 20) + 1024L * inputLength + 2 * requested) {
            throw new AssertionError(heap + " heap bytes allocated for " + inputLength + " input bytes");
        }
    }

    private static long allocatedHeap() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }
}
