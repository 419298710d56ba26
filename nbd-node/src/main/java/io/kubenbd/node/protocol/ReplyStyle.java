package io.kubenbd.node.protocol;

/** Which reply headers a connection negotiated. */
public enum ReplyStyle {
    /** Neither structured replies nor extended headers: 16-byte simple replies only. */
    SIMPLE,
    /** NBD_OPT_STRUCTURED_REPLY: 20-byte chunk headers, 32-bit lengths. */
    STRUCTURED,
    /** NBD_OPT_EXTENDED_HEADERS: 32-byte chunk headers, 64-bit lengths, extended requests. */
    EXTENDED;

    public boolean chunked() {
        return this != SIMPLE;
    }
}
