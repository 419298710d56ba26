package io.kubenbd.node.protocol;

import com.code_intelligence.jazzer.junit.FuzzTest;

import java.util.Arrays;
import java.util.List;

/**
 * The transmission decoder on arbitrary client bytes, compact or extended headers (the
 * input's first byte chooses: odd is extended). Seeds in {@code RequestDecoderFuzzTestInputs/}
 * are real clients' transmission phases; see {@link OptionDecoderFuzzTest} for the modes.
 */
class RequestDecoderFuzzTest {

    @FuzzTest(maxDuration = "30s")
    void requests(byte[] input) {
        if (input.length == 0) {
            return;
        }
        boolean extended = (input[0] & 1) != 0;
        byte[] stream = Arrays.copyOfRange(input, 1, input.length);
        List<Object> decoded = DecoderHarness.run(() -> new RequestDecoder(extended), stream, message -> {
            if (!(message instanceof Request request)) {
                throw new AssertionError("unexpected message " + message);
            }
            switch (request) {
                case Request.Write write -> {
                    // The payload is a slice of what arrived: never more than the input, never over the limit.
                    if (write.data().readableBytes() != write.header().length()
                            || write.header().length() > Limits.MAX_PAYLOAD) {
                        throw new AssertionError(write.header().describe() + " with a payload of "
                                + write.data().readableBytes() + " bytes");
                    }
                }
                case Request.BlockStatus status when status.payloadForm() -> {
                    if (status.contextIds().length * 4L > stream.length) {
                        throw new AssertionError(status.contextIds().length + " context ids from " + stream.length
                                + " bytes");
                    }
                }
                default -> { }
            }
        });
        int header = extended ? 32 : 28;
        if (decoded.size() > stream.length / header) {
            throw new AssertionError(decoded.size() + " requests from " + stream.length + " bytes");
        }
    }
}
