package io.kubenbd.node.server;

import java.net.InetAddress;
import java.util.HashSet;
import java.util.Set;

/**
 * The single-writer claim on an export: kube-nbd's answer to two nodes mounting one
 * ReadWriteOnce filesystem. A consumer claims the export by sending a WRITE of length zero
 * (a request the NBD spec says clients should not send and whose meaning it leaves to the
 * server, so no ordinary client sends it by accident). While any claiming connection of the
 * holder's host is open, requests that would change the data from any other host are refused
 * with EPERM, and so are their claims; reads and flushes stay open to everyone, so backups
 * go on. Without a claim nothing is limited: multi-writer use (a VM's live migration between
 * nodes, a restore) works as before.
 *
 * <p>A host is the peer's IP address, which is what tells two nodes' CSI plugins apart
 * (each node's plugin connects from its own pod or node address; an address translated on the
 * way, for example by a NodePort, can make two consumers look like one, so this is a second
 * line of defence behind Kubernetes' attach/detach controller, not the only one). A consumer
 * that dies without closing its connections holds the claim until TCP keepalive drops them.
 */
final class WriterClaim {
    private final String exportName;
    /** Read without the lock on every data-changing request; null when unclaimed. */
    private volatile InetAddress holder;
    private final Set<ConnectionContext> connections = new HashSet<>();

    WriterClaim(String exportName) {
        this.exportName = exportName;
    }

    /** Claims the export for {@code host}; null when granted, else why not (for the EPERM reply). */
    synchronized String claim(ConnectionContext conn, InetAddress host) {
        String refusal = refusalFor(host);
        if (refusal != null) {
            return refusal;
        }
        holder = host;
        connections.add(conn);
        return null;
    }

    /** Null when {@code host} may change the export's data, else why not. */
    String refusalFor(InetAddress host) {
        InetAddress current = holder;
        if (current == null || current.equals(host)) {
            return null;
        }
        return "export " + exportName + " is claimed for writing by another node (" + current.getHostAddress()
                + "); a second writer would corrupt the filesystem on it. Detach it there first";
    }

    /** Ends {@code conn}'s part in the claim; true when that released the export. */
    synchronized boolean release(ConnectionContext conn) {
        if (connections.remove(conn) && connections.isEmpty()) {
            holder = null;
            return true;
        }
        return false;
    }

    /** The holder's address, or null. */
    InetAddress holder() {
        return holder;
    }
}
