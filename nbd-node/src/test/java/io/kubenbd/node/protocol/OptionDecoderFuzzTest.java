package io.kubenbd.node.protocol;

import com.code_intelligence.jazzer.junit.FuzzTest;

import java.util.List;

/**
 * The handshake decoder on arbitrary client bytes. Regression mode (plain {@code mvn verify})
 * runs the seeds in {@code OptionDecoderFuzzTestInputs/} (real clients' handshakes); with
 * {@code JAZZER_FUZZ=1} Jazzer mutates them for {@code maxDuration} (see the README).
 */
class OptionDecoderFuzzTest {
    private static final int OPTION_HEADER = 16;

    @FuzzTest(maxDuration = "30s")
    void options(byte[] input) {
        List<Object> decoded = DecoderHarness.run(OptionDecoder::new, input, message -> {
            switch (message) {
                case ClientFlags flags -> { }
                case OptionRequest.Info info -> {
                    bounded(info.name());
                    if (info.requests().size() * 2 > input.length) {
                        throw new AssertionError(info + " asks for more items than the input holds");
                    }
                }
                case OptionRequest.MetaContext meta -> {
                    bounded(meta.exportName());
                    meta.queries().forEach(OptionDecoderFuzzTest::bounded);
                    if (meta.queries().size() * 4 > input.length) {
                        throw new AssertionError(meta + " has more queries than the input holds");
                    }
                }
                case OptionRequest.ExportName name -> bounded(name.name());
                case OptionRequest.Oversized oversized -> {
                    if (oversized.length() <= Limits.MAX_OPTION_DATA) {
                        throw new AssertionError(oversized + " is not over the limit");
                    }
                }
                case OptionRequest request -> { }
                default -> throw new AssertionError("unexpected message " + message);
            }
        });
        if (decoded.size() > 1 + input.length / OPTION_HEADER) {
            throw new AssertionError(decoded.size() + " messages from " + input.length + " bytes");
        }
        for (int i = 0; i < decoded.size(); i++) {
            if ((i == 0) != (decoded.get(i) instanceof ClientFlags)) {
                throw new AssertionError("client flags must come first and once: " + decoded);
            }
        }
    }

    private static void bounded(String s) {
        if (s.length() > Limits.MAX_STRING) {
            throw new AssertionError("a string of " + s.length() + " characters passed the " + Limits.MAX_STRING
                    + "-byte limit");
        }
    }
}
