package io.kubenbd.node.protocol;

/** Transmission request types. */
public final class CommandType {
    public static final int READ = 0;
    public static final int WRITE = 1;
    public static final int DISC = 2;
    public static final int FLUSH = 3;
    public static final int TRIM = 4;
    public static final int CACHE = 5;
    public static final int WRITE_ZEROES = 6;
    public static final int BLOCK_STATUS = 7;

    public static String name(int type) {
        return switch (type) {
            case READ -> "READ";
            case WRITE -> "WRITE";
            case DISC -> "DISC";
            case FLUSH -> "FLUSH";
            case TRIM -> "TRIM";
            case CACHE -> "CACHE";
            case WRITE_ZEROES -> "WRITE_ZEROES";
            case BLOCK_STATUS -> "BLOCK_STATUS";
            default -> "command " + type;
        };
    }

    private CommandType() {}
}
