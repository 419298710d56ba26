package io.kubenbd.node.client;

import io.kubenbd.node.protocol.OptionReplyType;
import io.kubenbd.node.protocol.OptionType;

import java.io.IOException;

/** The server answered an option with an error reply; the handshake can go on. */
public final class OptionRefusedException extends IOException {
    private final int replyType;

    public OptionRefusedException(int option, int replyType, String message) {
        super(OptionType.name(option) + ": " + OptionReplyType.name(replyType) + (message.isEmpty() ? "" : ": " + message));
        this.replyType = replyType;
    }

    public int replyType() {
        return replyType;
    }
}
