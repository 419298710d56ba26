package io.kubenbd.node.protocol;

/** Flags exchanged at the start of the fixed newstyle handshake. */
public final class HandshakeFlags {
    /** Server: fixed newstyle is supported. */
    public static final int FIXED_NEWSTYLE = 1;
    /** Server: the 124 zero bytes after NBD_OPT_EXPORT_NAME may be skipped. */
    public static final int NO_ZEROES = 1 << 1;
    /** Client: speaks fixed newstyle. */
    public static final int CLIENT_FIXED_NEWSTYLE = 1;
    /** Client: skip the 124 zero bytes. */
    public static final int CLIENT_NO_ZEROES = 1 << 1;
    public static final int KNOWN_CLIENT_FLAGS = CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES;

    private HandshakeFlags() {}
}
