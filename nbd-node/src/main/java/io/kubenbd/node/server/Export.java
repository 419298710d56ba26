package io.kubenbd.node.server;

import io.kubenbd.node.protocol.Limits;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.TransmissionFlags;
import io.kubenbd.node.storage.DirtyBitmapInfo;
import io.kubenbd.node.storage.DirtyBitmapSet;
import io.kubenbd.node.storage.DirtyBitmapState;
import io.kubenbd.node.storage.LayeredBackend;
import io.kubenbd.node.storage.StorageBackend;

import java.io.IOException;
import java.net.InetAddress;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Optional;
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
    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(Export.class);

    private final ExportConfig config;
    private final StorageBackend backend;
    private final List<MetaContext> fixedContexts;
    /** The path whose {@code .bitmaps} sibling directory holds the bitmaps. */
    private final Path bitmapAnchor;
    /** Null until the export has a bitmap; created by the first one added at run time. */
    private volatile DirtyBitmapSet bitmaps;
    private final AtomicInteger connections = new AtomicInteger();
    private final Set<ConnectionContext> live = ConcurrentHashMap.newKeySet();
    private final ExportStatistics statistics = new ExportStatistics();
    private final WriterClaim writerClaim;

    public Export(ExportConfig config, StorageBackend backend, DirtyBitmapSet bitmaps, Path bitmapAnchor) {
        this.config = config;
        this.bitmapAnchor = bitmapAnchor;
        this.backend = backend;
        this.bitmaps = bitmaps;
        this.writerClaim = new WriterClaim(config.name());
        this.fixedContexts = java.util.stream.Stream.of(
                        new MetaContext(MetaContext.BASE_ALLOCATION, new BaseAllocationContext(backend)),
                        new MetaContext(MetaContext.ALLOCATION_DEPTH, new AllocationDepthContext(backend)))
                .filter(context -> config.contexts().contains(context.name()))
                .toList();
    }

    public static Export open(ExportConfig config) throws IOException {
        return open(config, null);
    }

    /** Opens the export; with a state directory its bitmaps live there instead of beside the data. */
    public static Export open(ExportConfig config, Path stateDir) throws IOException {
        Path bitmapAnchor = stateDir == null ? config.path()
                : stateDir.resolve("export-" + URLEncoder.encode(config.name(), StandardCharsets.UTF_8));
        StorageBackend backend = switch (config.format()) {
            case RAW -> StorageBackend.open(config.path(), config.readOnly());
            case OVERLAY -> LayeredBackend.open(config.path(), config.backing(), config.readOnly());
        };
        try {
            return new Export(config, backend, openBitmaps(config, bitmapAnchor, backend.size()), bitmapAnchor);
        } catch (IOException | RuntimeException e) {
            backend.close();
            throw e;
        }
    }

    /**
     * The export's bitmaps: those persisted beside the data from earlier runs, plus the
     * configured ones that do not exist yet. No directory is created for an export that has
     * never had a bitmap.
     */
    private static DirtyBitmapSet openBitmaps(ExportConfig config, Path anchor, long size) throws IOException {
        if (config.bitmaps().isEmpty() && !Files.isDirectory(DirtyBitmapSet.directoryFor(anchor))) {
            return null;
        }
        DirtyBitmapSet set = DirtyBitmapSet.open(anchor, size);
        for (DirtyBitmapInfo info : set.list()) {
            if (info.state() == DirtyBitmapState.INCONSISTENT) {
                log.warn("export={} bitmap {} is inconsistent and not offered: {}", config.name(), info.name(), info.reason());
            }
        }
        try {
            for (ExportConfig.BitmapSpec wanted : config.bitmaps()) {
                if (set.info(wanted.name()).isEmpty()) {
                    set.add(wanted.name(), wanted.granularity());
                }
            }
        } catch (IOException | RuntimeException e) {
            set.close();
            throw e;
        }
        return set;
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

    /**
     * The meta contexts this export offers now, in context-id order. A bitmap that is not
     * consistent (the server crashed while it recorded) is not offered at all.
     */
    List<MetaContext> metaContexts() {
        DirtyBitmapSet set = bitmaps;
        if (set == null) {
            return fixedContexts;
        }
        List<MetaContext> all = new ArrayList<>(fixedContexts);
        List<DirtyBitmapInfo> list = set.list();
        for (int i = 0; i < list.size(); i++) {
            if (list.get(i).state() != DirtyBitmapState.INCONSISTENT) {
                all.add(new MetaContext(MetaContext.FIRST_BITMAP + i, new DirtyBitmapContext(set, list.get(i).name())));
            }
        }
        return all;
    }

    /** Records that a write, trim or zeroing changed the range (called once the change is done, before its reply). */
    void markDirty(long offset, long length) {
        DirtyBitmapSet set = bitmaps;
        if (set != null && length > 0) {
            set.markDirty(offset, length);
        }
    }

    /** The export's bitmaps, empty if it keeps none. */
    public Optional<DirtyBitmapSet> bitmaps() {
        return Optional.ofNullable(bitmaps);
    }

    /** The export's bitmaps, opening (and so creating) the set beside the data if there is none yet. */
    synchronized DirtyBitmapSet bitmapsForUpdate() throws IOException {
        if (bitmaps == null) {
            bitmaps = DirtyBitmapSet.open(bitmapAnchor, backend.size());
        }
        return bitmaps;
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

    WriterClaim writerClaim() {
        return writerClaim;
    }

    /** The address of the node holding the single-writer claim, if any (see {@link WriterClaim}). */
    public Optional<InetAddress> writer() {
        return Optional.ofNullable(writerClaim.holder());
    }

    public ExportStatistics statistics() {
        return statistics;
    }

    public int activeConnections() {
        return connections.get();
    }

    @Override
    public void close() throws IOException {
        try {
            DirtyBitmapSet set = bitmaps;
            if (set != null) {
                set.close(); // persists them and marks them cleanly closed
            }
        } finally {
            backend.close();
        }
    }
}
