package io.kubenbd.node.protocol;

import java.util.List;

/**
 * The complete answer to one request: its cookie, the request's offset (echoed by
 * extended replies) and the chunks in order. An empty chunk list means plain success.
 * The last chunk carries the DONE flag on the wire.
 */
public record Reply(long cookie, long requestOffset, List<ReplyChunk> chunks) {
    public Reply {
        chunks = List.copyOf(chunks);
    }

    public static Reply ok(RequestHeader request) {
        return new Reply(request.cookie(), request.offset(), List.of());
    }

    public static Reply error(RequestHeader request, NbdError error, String message) {
        return new Reply(request.cookie(), request.offset(), List.of(new ReplyChunk.Error(error, message)));
    }

    /** The error of the reply, or null when it succeeded. */
    public NbdError error() {
        for (ReplyChunk chunk : chunks) {
            if (chunk instanceof ReplyChunk.Error e) {
                return e.error();
            }
        }
        return null;
    }
}
