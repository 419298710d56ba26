package io.kubenbd.node.csi;

import io.kubenbd.node.client.ExportInfo;
import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.client.NbdCommandException;
import io.kubenbd.node.client.NbdProtocolException;
import io.kubenbd.node.protocol.NbdError;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A volume's connections to its NBD server, one request at a time on each, shared by the FUSE
 * threads. When a connection breaks (the server restarted, the pod moved) the request is
 * retried on a new connection for up to {@link #RECONNECT_WINDOW}, so I/O pauses rather than
 * fails while the server comes back; what the server acknowledged as flushed stays flushed
 * there. An error the server answers (EIO, ENOSPC, EPERM ...) is passed on, not retried, and so
 * is a reply that breaks the protocol (the client dropped that connection; the next request
 * on it reconnects).
 */
final class ExportConnections implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ExportConnections.class);
    static final Duration RECONNECT_WINDOW = Duration.ofSeconds(120);

    /** One request on one connection. */
    interface Request<T> {
        T run(NbdClient client) throws IOException;
    }

    private final String volumeId;
    private final VolumeContext context;
    private final ExportDialer dialer;
    private final BlockingQueue<NbdClient> idle;
    private final List<NbdClient> all = new ArrayList<>();
    private volatile ExportInfo export;
    private volatile boolean closed;
    /** Why the last request failed, until one succeeds again: the volume's condition for the CO. */
    private volatile String lastFailure;

    private ExportConnections(ExportDialer dialer) {
        this.volumeId = dialer.volumeId();
        this.context = dialer.context();
        this.dialer = dialer;
        this.idle = new ArrayBlockingQueue<>(context.connections());
    }

    /** Opens every connection now, so that a wrong address or key, or another node's claim, fails the stage call. */
    static ExportConnections open(ExportDialer dialer) throws IOException {
        ExportConnections connections = new ExportConnections(dialer);
        try {
            for (int i = 0; i < dialer.context().connections(); i++) {
                NbdClient client = connections.connect();
                synchronized (connections.all) {
                    connections.all.add(client);
                }
                connections.idle.add(client);
            }
        } catch (IOException | RuntimeException e) {
            connections.close();
            throw e;
        }
        return connections;
    }

    private NbdClient connect() throws IOException {
        NbdClient client = dialer.dial(true);
        export = client.export();
        return client;
    }

    /** Why I/O is failing or waiting now, or null while it works. */
    String lastFailure() {
        return lastFailure;
    }

    /** The export as the server described it at the last connect (size, flags, block sizes). */
    ExportInfo export() {
        return export;
    }

    /** Asks the server again for the export's size (after the volume was expanded). */
    long refreshSize() throws IOException {
        connect().disconnect();
        return export.size();
    }

    <T> T call(Request<T> request) throws IOException {
        Instant deadline = Instant.now().plus(RECONNECT_WINDOW);
        NbdClient client = take();
        try {
            while (true) {
                try {
                    T result = request.run(client);
                    lastFailure = null;
                    return result;
                } catch (NbdCommandException e) {
                    if (e.error() != NbdError.ESHUTDOWN) {
                        throw e;
                    }
                    // The server is stopping for a restart: wait for the new one like for a broken connection.
                    if (closed || Instant.now().isAfter(deadline)) {
                        throw e;
                    }
                    log.warn("volume={} server {} is shutting down; reconnecting", volumeId, context);
                    client = replace(client, deadline);
                } catch (NbdProtocolException e) {
                    // The server answered, wrongly: waiting for it to come back would not help. The client has
                    // closed the connection; the next request on this slot reconnects.
                    lastFailure = context + " broke the NBD protocol: " + e.getMessage();
                    log.warn("volume={} {}", volumeId, lastFailure);
                    throw new IOException("volume " + volumeId + ": " + lastFailure, e);
                } catch (IOException e) {
                    if (closed || Instant.now().isAfter(deadline)) {
                        lastFailure = context + " unreachable: " + e.getMessage();
                        throw new IOException("volume " + volumeId + ": " + lastFailure, e);
                    }
                    lastFailure = "reconnecting to " + context + " after: " + e.getMessage();
                    log.warn("volume={} connection to {} broke ({}); reconnecting", volumeId, context, e.getMessage());
                    client = replace(client, deadline);
                }
            }
        } finally {
            idle.add(client);
        }
    }

    private NbdClient take() throws IOException {
        try {
            NbdClient client = idle.poll(RECONNECT_WINDOW.toSeconds(), TimeUnit.SECONDS);
            if (client == null) {
                throw new IOException("volume " + volumeId + ": no connection became free within " + RECONNECT_WINDOW);
            }
            return client;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted", e);
        }
    }

    /** Closes a broken connection and opens a new one, retrying with back-off until the deadline. */
    private NbdClient replace(NbdClient broken, Instant deadline) throws IOException {
        closeQuietly(broken);
        long backoffMillis = 100;
        while (true) {
            try {
                NbdClient fresh = connect();
                synchronized (all) {
                    all.remove(broken);
                    all.add(fresh);
                }
                log.info("volume={} reconnected to {}", volumeId, context);
                return fresh;
            } catch (IOException e) {
                if (e instanceof ExportDialer.ClaimRefusedException || closed
                        || Instant.now().plusMillis(backoffMillis).isAfter(deadline)) {
                    synchronized (all) {
                        all.remove(broken);
                    }
                    throw new IOException("volume " + volumeId + ": cannot reconnect to " + context + ": " + e.getMessage(), e);
                }
                sleep(backoffMillis);
                backoffMillis = Math.min(backoffMillis * 2, 5000);
            }
        }
    }

    private static void sleep(long millis) throws IOException {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted", e);
        }
    }

    private static void closeQuietly(NbdClient client) {
        try {
            client.close();
        } catch (IOException ignored) {
            // Already broken; nothing more to release.
        }
    }

    /** Disconnects cleanly (NBD_CMD_DISC, which makes the server flush). */
    @Override
    public void close() {
        closed = true;
        List<NbdClient> clients;
        synchronized (all) {
            clients = new ArrayList<>(all);
            all.clear();
        }
        for (NbdClient client : clients) {
            try {
                client.disconnect();
            } catch (IOException e) {
                closeQuietly(client);
            }
        }
    }
}
