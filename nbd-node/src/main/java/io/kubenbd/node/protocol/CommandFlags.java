package io.kubenbd.node.protocol;

/** Per-request command flags. */
public final class CommandFlags {
    public static final int FUA = 1;
    public static final int NO_HOLE = 1 << 1;
    public static final int DF = 1 << 2;
    public static final int REQ_ONE = 1 << 3;
    public static final int FAST_ZERO = 1 << 4;
    public static final int PAYLOAD_LEN = 1 << 5;

    private CommandFlags() {}
}
