package io.kubenbd.node.server;

import io.kubenbd.node.protocol.Limits;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.TransmissionFlags;
import io.kubenbd.node.storage.StorageBackend;

import java.io.IOException;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * An export being served: its configuration, the one backend every connection shares
 * (which is what makes multi-conn safe: a flush on any connection syncs the same file),
 * the meta contexts it offers and the count of connections in transmission.
 */
public final class Export implements AutoCloseable {
    private final ExportConfig config;
    private final StorageBackend backend;
    private final List<MetaContextProvider> metaContexts;
    private final AtomicInteger connections = new AtomicInteger();
    private final Set<ConnectionContext> live = ConcurrentHashMap.newKeySet();
    private final ExportStatistics statistics = new ExportStatistics();

    public Export(ExportConfig config, StorageBackend backend) {
        this.config = config;
        this.backend = backend;
        this.metaContexts = List.of(new BaseAllocationContext(backend));
    }

    public static Export open(ExportConfig config) throws IOException {
        return new Export(config, StorageBackend.open(config.path(), config.readOnly()));
    }

    public String name() {
        return config.name();
    }

    public ExportConfig config() {
        return config;
    }

    public StorageBackend backend() {
        return backend;
    }

    public long size() {
        return backend.size();
    }

    public boolean readOnly() {
        return config.readOnly() || backend.readOnly();
    }

    /** The meta contexts this export offers, in context-id order. */
    public List<MetaContextProvider> metaContexts() {
        return metaContexts;
    }

    /**
     * The flags derived from what the backend can do and what the client negotiated.
     *
     * @param blockStatusPayload whether to advertise the block-status payload form
     */
    public int transmissionFlags(ReplyStyle style, boolean blockStatusPayload) {
        int flags = TransmissionFlags.HAS_FLAGS | TransmissionFlags.SEND_FLUSH | TransmissionFlags.SEND_FUA
                | TransmissionFlags.SEND_CACHE;
        if (readOnly()) {
            flags |= TransmissionFlags.READ_ONLY;
        } else {
            flags |= TransmissionFlags.SEND_WRITE_ZEROES | TransmissionFlags.SEND_FAST_ZERO;
            if (backend.supportsTrim()) {
                flags |= TransmissionFlags.SEND_TRIM;
            }
        }
        if (backend.rotational()) {
            flags |= TransmissionFlags.ROTATIONAL;
        }
        if (style.chunked()) {
            flags |= TransmissionFlags.SEND_DF;
        }
        if (config.maxConnections() > 1) {
            flags |= TransmissionFlags.CAN_MULTI_CONN;
        }
        if (blockStatusPayload && style == ReplyStyle.EXTENDED) {
            flags |= TransmissionFlags.BLOCK_STATUS_PAYLOAD;
        }
        return flags;
    }

    /** Size constraints; the minimum is the backend's only for clients that promised to honour it. */
    public OptionReply.InfoBlockSize blockSize(boolean clientHonoursConstraints) {
        int minimum = clientHonoursConstraints ? backend.minimumBlockSize() : 1;
        int preferred = Math.max(minimum, backend.preferredBlockSize());
        return new OptionReply.InfoBlockSize(minimum, preferred, Limits.MAX_PAYLOAD);
    }

    /** Claims a connection slot; false when the export is at its limit. */
    boolean tryAcquireConnection() {
        while (true) {
            int current = connections.get();
            if (current >= config.maxConnections()) {
                return false;
            }
            if (connections.compareAndSet(current, current + 1)) {
                return true;
            }
        }
    }

    void releaseConnection() {
        connections.decrementAndGet();
    }

    void attach(ConnectionContext conn) {
        live.add(conn);
    }

    void detach(ConnectionContext conn) {
        live.remove(conn);
    }

    /** Connections in transmission now, oldest first. */
    public List<ConnectionContext> connections() {
        return live.stream().sorted(java.util.Comparator.comparingLong(ConnectionContext::id)).toList();
    }

    public ExportStatistics statistics() {
        return statistics;
    }

    public int activeConnections() {
        return connections.get();
    }

    @Override
    public void close() throws IOException {
        backend.close();
    }
}
