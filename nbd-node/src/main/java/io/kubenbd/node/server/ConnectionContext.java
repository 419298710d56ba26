package io.kubenbd.node.server;

import java.net.SocketAddress;

/** Identity of one client connection, for log lines and statistics. */
final class ConnectionContext {
    private final long id;
    private final String peer;
    private volatile String exportName = "-";

    ConnectionContext(long id, SocketAddress peer) {
        this.id = id;
        this.peer = peer == null ? "?" : peer.toString().replaceFirst("^/", "");
    }

    void exportName(String name) {
        this.exportName = name.isEmpty() ? "\"\"" : name;
    }

    /** The prefix every log line about this connection starts with. */
    @Override
    public String toString() {
        return "conn=" + id + " peer=" + peer + " export=" + exportName;
    }
}
