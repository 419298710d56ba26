package io.kubenbd.node.protocol;

/** Reply types of option haggling; errors have bit 31 set. */
public final class OptionReplyType {
    public static final int ACK = 1;
    public static final int SERVER = 2;
    public static final int INFO = 3;
    public static final int META_CONTEXT = 4;
    private static final int ERROR_BIT = 1 << 31;
    public static final int ERR_UNSUP = ERROR_BIT | 1;
    public static final int ERR_POLICY = ERROR_BIT | 2;
    public static final int ERR_INVALID = ERROR_BIT | 3;
    public static final int ERR_PLATFORM = ERROR_BIT | 4;
    public static final int ERR_TLS_REQD = ERROR_BIT | 5;
    public static final int ERR_UNKNOWN = ERROR_BIT | 6;
    public static final int ERR_SHUTDOWN = ERROR_BIT | 7;
    public static final int ERR_BLOCK_SIZE_REQD = ERROR_BIT | 8;
    public static final int ERR_TOO_BIG = ERROR_BIT | 9;
    public static final int ERR_EXT_HEADER_REQD = ERROR_BIT | 10;

    public static boolean isError(int type) {
        return (type & ERROR_BIT) != 0;
    }

    public static String name(int type) {
        return switch (type) {
            case ACK -> "NBD_REP_ACK";
            case SERVER -> "NBD_REP_SERVER";
            case INFO -> "NBD_REP_INFO";
            case META_CONTEXT -> "NBD_REP_META_CONTEXT";
            case ERR_UNSUP -> "NBD_REP_ERR_UNSUP";
            case ERR_POLICY -> "NBD_REP_ERR_POLICY";
            case ERR_INVALID -> "NBD_REP_ERR_INVALID";
            case ERR_PLATFORM -> "NBD_REP_ERR_PLATFORM";
            case ERR_TLS_REQD -> "NBD_REP_ERR_TLS_REQD";
            case ERR_UNKNOWN -> "NBD_REP_ERR_UNKNOWN";
            case ERR_SHUTDOWN -> "NBD_REP_ERR_SHUTDOWN";
            case ERR_BLOCK_SIZE_REQD -> "NBD_REP_ERR_BLOCK_SIZE_REQD";
            case ERR_TOO_BIG -> "NBD_REP_ERR_TOO_BIG";
            case ERR_EXT_HEADER_REQD -> "NBD_REP_ERR_EXT_HEADER_REQD";
            default -> "reply type 0x" + Integer.toHexString(type);
        };
    }

    private OptionReplyType() {}
}
