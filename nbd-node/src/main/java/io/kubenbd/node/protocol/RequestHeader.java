package io.kubenbd.node.protocol;

/**
 * The fixed part of a transmission request. {@code length} is the effect length, or for
 * NBD_CMD_WRITE the payload length; with extended headers it is 64 bits wide.
 */
public record RequestHeader(int flags, int type, long cookie, long offset, long length) {

    public boolean hasFlag(int flag) {
        return (flags & flag) != 0;
    }

    /** The request's byte count in the form log lines and errors use. */
    public String describe() {
        return CommandType.name(type) + " offset=" + Long.toUnsignedString(offset)
                + " length=" + Long.toUnsignedString(length) + " flags=0x" + Integer.toHexString(flags);
    }
}
