package io.kubenbd.node.protocol;

import io.netty.buffer.ByteBuf;
import io.netty.util.ReferenceCounted;

/**
 * A decoded transmission request. The decoder has consumed its payload, if any, so the
 * connection can go on whatever the server answers.
 */
public sealed interface Request {

    RequestHeader header();

    record Read(RequestHeader header) implements Request {}

    /** Holds a retained slice of the payload; whoever handles it releases it. */
    record Write(RequestHeader header, ByteBuf data) implements Request, ReferenceCounted {
        @Override public int refCnt() { return data.refCnt(); }
        @Override public Write retain() { data.retain(); return this; }
        @Override public Write retain(int increment) { data.retain(increment); return this; }
        @Override public Write touch() { data.touch(); return this; }
        @Override public Write touch(Object hint) { data.touch(hint); return this; }
        @Override public boolean release() { return data.release(); }
        @Override public boolean release(int decrement) { return data.release(decrement); }
    }

    record Disconnect(RequestHeader header) implements Request {}

    record Flush(RequestHeader header) implements Request {}

    record Trim(RequestHeader header) implements Request {}

    record Cache(RequestHeader header) implements Request {}

    record WriteZeroes(RequestHeader header) implements Request {}

    /**
     * NBD_CMD_BLOCK_STATUS. Without a payload, {@code contextIds} is null and the effect
     * length is the header's; with the payload form it lists the ids the client asked for.
     */
    record BlockStatus(RequestHeader header, long effectLength, int[] contextIds) implements Request {
        public boolean payloadForm() {
            return contextIds != null;
        }
    }

    /** An unknown command, or one whose framing was wrong but whose payload was consumed. */
    record Invalid(RequestHeader header, NbdError error, String reason) implements Request {}
}
