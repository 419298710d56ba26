package io.kubenbd.node.client;

import java.io.IOException;

/** The server broke the protocol or refused what the client needs; the connection is unusable. */
public final class NbdProtocolException extends IOException {
    public NbdProtocolException(String message) {
        super(message);
    }
}
