package io.kubenbd.node.protocol;

import io.netty.buffer.AbstractByteBufAllocator;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.UnpooledHeapByteBuf;
import io.netty.channel.ChannelHandler;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.DecoderException;
import io.netty.handler.codec.TooLongFrameException;
import io.netty.util.ReferenceCountUtil;
import io.netty.util.ResourceLeakDetector;

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;
import java.util.function.Supplier;

/**
 * Runs one decoder over arbitrary bytes the way netty would: in fragments (chosen from the
 * input itself, so a run is reproducible from its input alone), through an EmbeddedChannel
 * whose allocator records every buffer. What may escape is only the decoder's documented
 * framing errors ({@link CorruptedFrameException}, {@link TooLongFrameException}, thrown by the
 * decoder itself; anything else netty wraps in a plain {@link DecoderException}, which is a
 * finding). Afterwards no buffer may be left unreleased, and the buffers and the heap the run
 * allocated must stay in proportion to the input.
 */
final class DecoderHarness {
    static {
        ResourceLeakDetector.setLevel(ResourceLeakDetector.Level.PARANOID);
    }

    /** Java heap a run may allocate besides {@link #HEAP_PER_INPUT_BYTE} per input byte (the decoder, netty, the fuzzer's hooks). */
    private static final long HEAP_BASE = 8L << 20;
    private static final long HEAP_PER_INPUT_BYTE = 1024;

    private final Tracking allocator = new Tracking();
    private final EmbeddedChannel channel = new EmbeddedChannel();
    private final List<Object> messages = new ArrayList<>();
    private DecoderException framingError;
    private int decodedBeforeError;

    private DecoderHarness(ChannelHandler decoder) {
        channel.config().setAllocator(allocator);
        channel.pipeline().addLast(decoder);
    }

    /**
     * Feeds {@code input} to a new decoder, hands every decoded message to {@code check} before
     * releasing it, closes the channel and checks buffers and allocation. It runs twice and
     * counts the heap on the second run only: the first loads (and under the fuzzer instruments)
     * classes, which allocates far more than decoding does.
     *
     * @return the messages decoded (released)
     */
    static List<Object> run(Supplier<ChannelHandler> decoder, byte[] input, Consumer<Object> check) {
        new DecoderHarness(decoder.get()).feed(input, check, false);
        return new DecoderHarness(decoder.get()).feed(input, check, true);
    }

    private List<Object> feed(byte[] input, Consumer<Object> check, boolean countHeap) {
        long heapBefore = allocatedHeap();
        Random fragments = new Random(Arrays.hashCode(input));
        int at = 0;
        while (at < input.length) {
            int length = Math.min(input.length - at, 1 + fragments.nextInt(fragments.nextBoolean() ? 8 : 4096));
            ByteBuf fragment = allocator.heapBuffer(length).writeBytes(input, at, length);
            at += length;
            try {
                channel.writeInbound(fragment);
            } catch (DecoderException e) {
                framingError(e);
            }
            drain(check);
        }
        try {
            channel.finish();
        } catch (DecoderException e) {
            framingError(e);
        }
        drain(check);
        channel.finishAndReleaseAll();
        for (ByteBuf buffer : allocator.buffers) {
            if (buffer.refCnt() != 0) {
                throw new AssertionError("a buffer of " + buffer.capacity() + " bytes was not released");
            }
        }
        long capacity = allocator.buffers.stream().mapToLong(ByteBuf::capacity).sum();
        if (capacity > 8L * input.length + (64 << 10)) {
            throw new AssertionError("buffers of " + capacity + " bytes for " + input.length + " input bytes");
        }
        long heap = allocatedHeap() - heapBefore;
        if (countHeap && heap > HEAP_BASE + HEAP_PER_INPUT_BYTE * input.length) {
            throw new AssertionError(heap + " heap bytes allocated for " + input.length + " input bytes");
        }
        return messages;
    }

    private void framingError(DecoderException e) {
        boolean documented = (e instanceof CorruptedFrameException || e instanceof TooLongFrameException)
                && e.getCause() == null;
        if (!documented || framingError != null) {
            // A second error means the decoder went on decoding after losing the framing.
            throw e;
        }
        framingError = e;
        // What is queued now was decoded before the error; nothing may follow it.
        decodedBeforeError = channel.inboundMessages().size();
    }

    private void drain(Consumer<Object> check) {
        for (Object message; (message = channel.readInbound()) != null; ) {
            try {
                if (framingError != null && decodedBeforeError-- <= 0) {
                    throw new AssertionError("decoded " + message + " after the framing error " + framingError);
                }
                check.accept(message);
                messages.add(message);
            } finally {
                ReferenceCountUtil.release(message);
            }
        }
    }

    private static long allocatedHeap() {
        return ((com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean()).getCurrentThreadAllocatedBytes();
    }

    /** Heap buffers, every one remembered. */
    private static final class Tracking extends AbstractByteBufAllocator {
        final List<ByteBuf> buffers = new ArrayList<>();

        Tracking() {
            super(false);
        }

        @Override
        protected ByteBuf newHeapBuffer(int initialCapacity, int maxCapacity) {
            ByteBuf buffer = new UnpooledHeapByteBuf(this, initialCapacity, maxCapacity);
            buffers.add(buffer);
            return buffer;
        }

        @Override
        protected ByteBuf newDirectBuffer(int initialCapacity, int maxCapacity) {
            return newHeapBuffer(initialCapacity, maxCapacity);
        }

        @Override
        public boolean isDirectBufferPooled() {
            return false;
        }
    }
}
