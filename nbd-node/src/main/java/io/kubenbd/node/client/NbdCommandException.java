package io.kubenbd.node.client;

import io.kubenbd.node.protocol.NbdError;

import java.io.IOException;

/** The server answered a transmission request with an error; the connection stays usable. */
public final class NbdCommandException extends IOException {
    private final NbdError error;

    public NbdCommandException(String command, NbdError error, String message) {
        super(command + " failed: " + error + (message.isEmpty() ? "" : " (" + message + ")"));
        this.error = error;
    }

    public NbdError error() {
        return error;
    }
}
