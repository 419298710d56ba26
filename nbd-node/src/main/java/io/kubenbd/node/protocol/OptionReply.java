package io.kubenbd.node.protocol;

/** A server reply during option haggling; each is sent as one NBD option reply message. */
public sealed interface OptionReply {

    /** The reply type on the wire. */
    int type();

    record Ack() implements OptionReply {
        public int type() { return OptionReplyType.ACK; }
    }

    /** One export in the answer to NBD_OPT_LIST. */
    record Server(String name, String description) implements OptionReply {
        public int type() { return OptionReplyType.SERVER; }
    }

    record InfoExport(long size, int transmissionFlags) implements OptionReply {
        public int type() { return OptionReplyType.INFO; }
    }

    record InfoName(String name) implements OptionReply {
        public int type() { return OptionReplyType.INFO; }
    }

    record InfoDescription(String description) implements OptionReply {
        public int type() { return OptionReplyType.INFO; }
    }

    record InfoBlockSize(int minimum, int preferred, int maximum) implements OptionReply {
        public int type() { return OptionReplyType.INFO; }
    }

    /** An information item this side does not understand (client side only). */
    record InfoUnknown(int infoType) implements OptionReply {
        public int type() { return OptionReplyType.INFO; }
    }

    record MetaContext(int id, String name) implements OptionReply {
        public int type() { return OptionReplyType.META_CONTEXT; }
    }

    /** An error reply; the message is for a human and may be empty. */
    record Error(int type, String message) implements OptionReply {
        public Error {
            if (!OptionReplyType.isError(type)) {
                throw new IllegalArgumentException("not an error reply type: " + type);
            }
        }
    }
}
