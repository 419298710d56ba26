package io.kubenbd.node.protocol;

/** Option codes of the fixed newstyle handshake. */
public final class OptionType {
    public static final int EXPORT_NAME = 1;
    public static final int ABORT = 2;
    public static final int LIST = 3;
    public static final int STARTTLS = 5;
    public static final int INFO = 6;
    public static final int GO = 7;
    public static final int STRUCTURED_REPLY = 8;
    public static final int LIST_META_CONTEXT = 9;
    public static final int SET_META_CONTEXT = 10;
    public static final int EXTENDED_HEADERS = 11;

    public static String name(int option) {
        return switch (option) {
            case EXPORT_NAME -> "NBD_OPT_EXPORT_NAME";
            case ABORT -> "NBD_OPT_ABORT";
            case LIST -> "NBD_OPT_LIST";
            case STARTTLS -> "NBD_OPT_STARTTLS";
            case INFO -> "NBD_OPT_INFO";
            case GO -> "NBD_OPT_GO";
            case STRUCTURED_REPLY -> "NBD_OPT_STRUCTURED_REPLY";
            case LIST_META_CONTEXT -> "NBD_OPT_LIST_META_CONTEXT";
            case SET_META_CONTEXT -> "NBD_OPT_SET_META_CONTEXT";
            case EXTENDED_HEADERS -> "NBD_OPT_EXTENDED_HEADERS";
            default -> "option " + option;
        };
    }

    private OptionType() {}
}
