package io.kubenbd.node.server;

import java.net.SocketAddress;
import java.util.concurrent.atomic.LongAdder;

/** Identity and live facts of one client connection, for log lines and the control API. */
public final class ConnectionContext {
    private final long id;
    private final String peer;
    private final LongAdder requests = new LongAdder();
    private volatile String exportName = "-";
    private volatile String replies = "simple";
    private volatile String tls = "";

    ConnectionContext(long id, SocketAddress peer) {
        this.id = id;
        this.peer = peer == null ? "?" : peer.toString().replaceFirst("^/", "");
    }

    void exportName(String name) {
        this.exportName = name.isEmpty() ? "\"\"" : name;
    }

    void replies(String style) {
        this.replies = style;
    }

    void tls(String negotiated) {
        this.tls = negotiated;
    }

    void countRequest() {
        requests.increment();
    }

    public long id() {
        return id;
    }

    public String peer() {
        return peer;
    }

    /** "simple", "structured" or "extended". */
    public String replies() {
        return replies;
    }

    /** Protocol and suite, or empty for plaintext. */
    public String tls() {
        return tls;
    }

    public long requests() {
        return requests.sum();
    }

    /** The prefix every log line about this connection starts with. */
    @Override
    public String toString() {
        return "conn=" + id + " peer=" + peer + " export=" + exportName;
    }
}
