package io.kubenbd.node.storage;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;

/**
 * One bitmap's bits and state, owned by a {@link DirtyBitmapSet}. Bit {@code g} (bit
 * {@code g & 63} of word {@code g >>> 6}) stands for bytes {@code [g * granularity,
 * (g + 1) * granularity)}. Bits are set with atomic OR (lock-free, no allocation) from any
 * thread; everything else is called under the set's lock.
 */
final class DirtyBitmap {
    private static final VarHandle WORDS = MethodHandles.arrayElementVarHandle(long[].class);

    final String name;
    final long granularity;
    final int shift;
    final long exportSize;
    final long granules;
    final long sequence;
    private final long[] words;

    private volatile DirtyBitmapState state;
    private volatile String reason = "";

    DirtyBitmap(String name, long granularity, long exportSize, long sequence, DirtyBitmapState state) {
        this.name = name;
        this.granularity = granularity;
        this.shift = Long.numberOfTrailingZeros(granularity);
        this.exportSize = exportSize;
        this.granules = granules(exportSize, granularity);
        this.sequence = sequence;
        this.words = new long[wordCount(exportSize, granularity)];
        this.state = state;
    }

    static long granules(long exportSize, long granularity) {
        return exportSize / granularity + (exportSize % granularity == 0 ? 0 : 1);
    }

    /** Words needed, or -1 when they do not fit in a Java array. */
    static long wordCountOrMinus1(long exportSize, long granularity) {
        long g = granules(exportSize, granularity);
        long w = (g >>> 6) + ((g & 63) == 0 ? 0 : 1);
        return w > Integer.MAX_VALUE - 16 ? -1 : w;
    }

    static int wordCount(long exportSize, long granularity) {
        long w = wordCountOrMinus1(exportSize, granularity);
        if (w < 0) {
            throw new IllegalArgumentException("granularity " + granularity + " is too fine for an export of "
                    + exportSize + " bytes");
        }
        return (int) w;
    }

    int wordCount() {
        return words.length;
    }

    long word(int index) {
        return (long) WORDS.getVolatile(words, index);
    }

    void setWord(int index, long value) {
        WORDS.setVolatile(words, index, value);
    }

    DirtyBitmapState state() {
        return state;
    }

    String reason() {
        return reason;
    }

    void recording() {
        state = DirtyBitmapState.RECORDING;
        reason = "";
    }

    void frozen() {
        state = DirtyBitmapState.FROZEN;
        reason = "";
    }

    void inconsistent(String why) {
        reason = why;
        state = DirtyBitmapState.INCONSISTENT;
    }

    /** Marks every granule overlapping {@code [offset, end)}; {@code 0 <= offset < end <= exportSize}. */
    void mark(long offset, long end) {
        long first = offset >>> shift;
        long last = (end - 1) >>> shift;
        int w0 = (int) (first >>> 6);
        int w1 = (int) (last >>> 6);
        for (int w = w0; w <= w1; w++) {
            long mask = -1L;
            if (w == w0) {
                mask &= -1L << (first & 63);
            }
            if (w == w1) {
                mask &= -1L >>> (63 - (last & 63));
            }
            // Already set is the common case for rewrites of a hot region: no cache-line write then.
            if (((long) WORDS.getOpaque(words, w) & mask) != mask) {
                WORDS.getAndBitwiseOr(words, w, mask);
            }
        }
    }

    void clearBits() {
        for (int w = 0; w < words.length; w++) {
            WORDS.setVolatile(words, w, 0L);
        }
    }

    boolean isSet(long granule) {
        return (word((int) (granule >>> 6)) & (1L << (granule & 63))) != 0;
    }

    /** First granule in {@code [from, limit)} whose bit equals {@code set}, or {@code limit}. */
    long next(long from, long limit, boolean set) {
        if (from >= limit) {
            return limit;
        }
        int w = (int) (from >>> 6);
        long bits = set ? word(w) : ~word(w);
        bits &= -1L << (from & 63);
        while (true) {
            if (bits != 0) {
                return Math.min(((long) w << 6) + Long.numberOfTrailingZeros(bits), limit);
            }
            w++;
            if (((long) w << 6) >= limit) {
                return limit;
            }
            bits = set ? word(w) : ~word(w);
        }
    }

    /** Start byte of granule {@code g}, saturated at the export size. */
    long byteOffset(long granule) {
        return granule >= granules ? exportSize : granule << shift;
    }

    long dirtyBytes() {
        long count = 0;
        for (int w = 0; w < words.length; w++) {
            count += Long.bitCount(word(w));
        }
        if (count == 0) {
            return 0;
        }
        if (!isSet(granules - 1)) {
            return count << shift;
        }
        // The last granule stops at the export end.
        return ((count - 1) << shift) + (exportSize - ((granules - 1) << shift));
    }

    DirtyBitmapInfo info() {
        DirtyBitmapState s = state;
        return new DirtyBitmapInfo(name, granularity, s, s == DirtyBitmapState.INCONSISTENT ? 0 : dirtyBytes(),
                s == DirtyBitmapState.INCONSISTENT ? reason : "");
    }
}
