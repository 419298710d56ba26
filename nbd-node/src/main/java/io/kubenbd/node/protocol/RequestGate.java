package io.kubenbd.node.protocol;

/**
 * Asked by {@link RequestDecoder} before it frames each request, with the request's header:
 * whether the consumer takes it now. A refused request stays buffered, unread, until the
 * consumer calls {@link PausableDecoder#decodeBuffered}; the decoder then asks again.
 */
@FunctionalInterface
public interface RequestGate {
    /** Takes every request at once (clients and tests). */
    RequestGate OPEN = header -> true;

    boolean admit(RequestHeader header);
}
