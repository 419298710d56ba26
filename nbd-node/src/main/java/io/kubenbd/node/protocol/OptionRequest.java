package io.kubenbd.node.protocol;

import java.util.List;

/** A client option of the fixed newstyle handshake, parsed from its option code and data. */
public sealed interface OptionRequest {

    /** The option code on the wire. */
    int option();

    record ExportName(String name) implements OptionRequest {
        public int option() { return OptionType.EXPORT_NAME; }
    }

    record Abort() implements OptionRequest {
        public int option() { return OptionType.ABORT; }
    }

    record ListExports() implements OptionRequest {
        public int option() { return OptionType.LIST; }
    }

    record StartTls() implements OptionRequest {
        public int option() { return OptionType.STARTTLS; }
    }

    /** NBD_OPT_INFO ({@code go == false}) or NBD_OPT_GO. */
    record Info(boolean go, String name, List<Integer> requests) implements OptionRequest {
        public Info {
            requests = List.copyOf(requests);
        }

        public int option() { return go ? OptionType.GO : OptionType.INFO; }
    }

    record StructuredReply() implements OptionRequest {
        public int option() { return OptionType.STRUCTURED_REPLY; }
    }

    record ExtendedHeaders() implements OptionRequest {
        public int option() { return OptionType.EXTENDED_HEADERS; }
    }

    /** NBD_OPT_LIST_META_CONTEXT ({@code set == false}) or NBD_OPT_SET_META_CONTEXT. */
    record MetaContext(boolean set, String exportName, List<String> queries) implements OptionRequest {
        public MetaContext {
            queries = List.copyOf(queries);
        }

        public int option() { return set ? OptionType.SET_META_CONTEXT : OptionType.LIST_META_CONTEXT; }
    }

    /** A known option whose data does not parse; answered with NBD_REP_ERR_INVALID. */
    record Malformed(int option, String reason) implements OptionRequest {}

    /** Option data longer than the server buffers; skipped unread and answered with NBD_REP_ERR_TOO_BIG. */
    record Oversized(int option, long length) implements OptionRequest {}

    /** An option code this server does not implement; answered with NBD_REP_ERR_UNSUP. */
    record Unsupported(int option) implements OptionRequest {}
}
