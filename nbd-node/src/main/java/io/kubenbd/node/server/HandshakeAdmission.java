package io.kubenbd.node.server;

import java.net.InetAddress;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Counts connections still in the handshake, per server and per peer address, so a client
 * opening connections it never finishes cannot hold more than its share of them. Transmission
 * connections are limited per export ({@code max-connections}), not here.
 */
final class HandshakeAdmission {
    private final int maxPerServer;
    private final int maxPerPeer;
    private final AtomicInteger total = new AtomicInteger();
    private final ConcurrentHashMap<InetAddress, Integer> perPeer = new ConcurrentHashMap<>();

    HandshakeAdmission(int maxPerServer, int maxPerPeer) {
        this.maxPerServer = maxPerServer;
        this.maxPerPeer = maxPerPeer;
    }

    /** Counts a new connection from {@code peer} in, or returns why it is refused (then nothing is counted). */
    String tryEnter(InetAddress peer) {
        if (total.incrementAndGet() > maxPerServer) {
            total.decrementAndGet();
            return maxPerServer + " connections are already in the handshake (--max-handshakes)";
        }
        if (peer == null) {
            return null;
        }
        boolean[] refused = {false};
        perPeer.compute(peer, (address, count) -> {
            int now = count == null ? 0 : count;
            if (now >= maxPerPeer) {
                refused[0] = true;
                return now;
            }
            return now + 1;
        });
        if (refused[0]) {
            total.decrementAndGet();
            return maxPerPeer + " connections from " + peer.getHostAddress()
                    + " are already in the handshake (--max-handshakes-per-peer)";
        }
        return null;
    }

    /** A connection counted by {@link #tryEnter} left the handshake (transmission or closed). */
    void leave(InetAddress peer) {
        total.decrementAndGet();
        if (peer != null) {
            perPeer.computeIfPresent(peer, (address, count) -> count <= 1 ? null : count - 1);
        }
    }

    int inHandshake() {
        return total.get();
    }
}
