package io.kubenbd.node.protocol;

/** The 32-bit flags a client sends right after the server's greeting. */
public record ClientFlags(int flags) {
    public boolean fixedNewstyle() {
        return (flags & HandshakeFlags.CLIENT_FIXED_NEWSTYLE) != 0;
    }

    public boolean noZeroes() {
        return (flags & HandshakeFlags.CLIENT_NO_ZEROES) != 0;
    }

    /** Bits the protocol does not define, which oblige the server to hang up. */
    public int unknownBits() {
        return flags & ~HandshakeFlags.KNOWN_CLIENT_FLAGS;
    }
}
