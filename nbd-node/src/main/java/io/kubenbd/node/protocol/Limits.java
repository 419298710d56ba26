package io.kubenbd.node.protocol;

/** Size limits the server enforces and advertises; the same numbers qemu-nbd uses. */
public final class Limits {
    /** Largest READ/WRITE payload (advertised as the maximum block size): 32 MiB. */
    public static final int MAX_PAYLOAD = 32 * 1024 * 1024;
    /** Longest string (export name, description, context name) the spec allows. */
    public static final int MAX_STRING = 4096;
    /** Largest option payload buffered during the handshake; longer ones are skipped unread. */
    public static final int MAX_OPTION_DATA = 64 * 1024;
    /** Most extents sent in one block status chunk (the spec caps it at 2^20). */
    public static final int MAX_EXTENTS_PER_CHUNK = 1 << 16;

    private Limits() {}
}
