package io.kubenbd.node.protocol;

import java.util.ArrayList;
import java.util.List;

/** The 16-bit export flags sent with NBD_INFO_EXPORT or after NBD_OPT_EXPORT_NAME. */
public final class TransmissionFlags {
    public static final int HAS_FLAGS = 1;
    public static final int READ_ONLY = 1 << 1;
    public static final int SEND_FLUSH = 1 << 2;
    public static final int SEND_FUA = 1 << 3;
    public static final int ROTATIONAL = 1 << 4;
    public static final int SEND_TRIM = 1 << 5;
    public static final int SEND_WRITE_ZEROES = 1 << 6;
    public static final int SEND_DF = 1 << 7;
    public static final int CAN_MULTI_CONN = 1 << 8;
    public static final int SEND_RESIZE = 1 << 9;
    public static final int SEND_CACHE = 1 << 10;
    public static final int SEND_FAST_ZERO = 1 << 11;
    public static final int BLOCK_STATUS_PAYLOAD = 1 << 12;

    private static final String[] NAMES = {
        null, "readonly", "flush", "fua", "rotational", "trim", "zeroes", "df",
        "multi", "resize", "cache", "fast-zero", "block-status-payload"
    };

    /** Names of the set flags other than HAS_FLAGS, in bit order, as {@code qemu-nbd --list} prints them. */
    public static List<String> names(int flags) {
        List<String> names = new ArrayList<>();
        for (int bit = 1; bit < NAMES.length; bit++) {
            if ((flags & (1 << bit)) != 0) {
                names.add(NAMES[bit]);
            }
        }
        return names;
    }

    private TransmissionFlags() {}
}
