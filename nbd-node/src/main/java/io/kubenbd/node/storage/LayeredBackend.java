package io.kubenbd.node.storage;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A backing chain: a writable top layer in the {@link OverlayImage} format over read-only
 * backing layers, each either an overlay image or, at the bottom only, a raw file or block
 * device.
 *
 * <p>Reads fall through each layer's UNALLOCATED clusters to the layer below; a layer shorter
 * than the one above it reads as zeroes past its end, and its own backing is not consulted
 * there (as in qemu). Writes go to the top layer, cluster by cluster: a write covering a whole
 * cluster is written as it is; a partial write to a cluster the top does not hold copies the
 * cluster up first (its bytes as the layers below show them, or zeroes for a ZERO cluster),
 * overlays the new bytes and writes the whole cluster. Only then is the cluster marked DATA
 * and its map block written, before the write returns. TRIM and WRITE_ZEROES mark whole
 * clusters ZERO, which masks the layers below; the partial clusters at their edges are zeroed
 * through a copy-up, so the range always reads as zeroes afterwards.
 *
 * <p>Changes to a cluster that is not yet DATA hold that cluster's lock (striped; a request
 * spanning many clusters takes the stripes of up to {@value #CHUNK_CLUSTERS} clusters at a time,
 * in ascending stripe order), so a copy-up never races a concurrent write to the same cluster.
 * Writes to DATA clusters take no lock.
 */
public final class LayeredBackend implements StorageBackend {
    private static final int LOCK_STRIPES = 4096;
    /** Clusters locked together by one step of a multi-cluster request; at most {@link #LOCK_STRIPES}. */
    private static final int CHUNK_CLUSTERS = 256;
    private static final MemorySegment ZEROES = Arena.global().allocate(OverlayImage.MAX_CLUSTER_SIZE, 4096);
    /** How many layer runs one allocation or depth query looks at before answering with what it has. */
    private static final int MAX_RUNS_SCANNED = 4096;

    private final OverlayImage top;
    /** Index 0 is the top layer. */
    private final List<Layer> layers;
    private final ReentrantLock[] clusterLocks = new ReentrantLock[LOCK_STRIPES];

    private sealed interface Layer permits Overlay, Raw {
        long size();

        void close() throws IOException;
    }

    private record Overlay(OverlayImage image) implements Layer {
        @Override
        public long size() {
            return image.virtualSize();
        }

        @Override
        public void close() throws IOException {
            image.close();
        }
    }

    private record Raw(StorageBackend backend) implements Layer {
        @Override
        public long size() {
            return backend.size();
        }

        @Override
        public void close() throws IOException {
            backend.close();
        }
    }

    /** A run of bytes with one state, as one step of walking the chain finds it. */
    private record Run(long length, int depth, boolean hole, boolean zero) {}

    private LayeredBackend(OverlayImage top, List<Layer> layers) {
        this.top = top;
        this.layers = layers;
        for (int i = 0; i < LOCK_STRIPES; i++) {
            clusterLocks[i] = new ReentrantLock();
        }
    }

    /**
     * Opens a chain. {@code backing.get(0)} is the layer right below {@code top}; every backing
     * layer is opened read-only, and only the last may be raw (a raw layer holds every byte, so
     * nothing below it could ever be read). The export has the top layer's virtual size.
     */
    public static LayeredBackend open(Path top, List<Path> backing, boolean readOnly) throws IOException {
        List<Path> all = new ArrayList<>();
        all.add(top);
        all.addAll(backing);
        for (int i = 0; i < all.size(); i++) {
            for (int j = 0; j < i; j++) {
                if (Files.isSameFile(all.get(i), all.get(j))) {
                    throw new IOException("backing chain names " + all.get(i) + " twice");
                }
            }
        }
        List<Layer> layers = new ArrayList<>();
        try {
            OverlayImage topImage = OverlayImage.open(top, readOnly);
            layers.add(new Overlay(topImage));
            for (int i = 0; i < backing.size(); i++) {
                Path path = backing.get(i);
                if (OverlayImage.isOverlay(path)) {
                    layers.add(new Overlay(OverlayImage.open(path, true)));
                } else if (i == backing.size() - 1) {
                    layers.add(new Raw(StorageBackend.open(path, true)));
                } else {
                    throw new IOException("backing layer " + path + " is not an overlay image; only the bottom"
                            + " layer of a chain may be raw");
                }
            }
            return new LayeredBackend(topImage, List.copyOf(layers));
        } catch (IOException | RuntimeException e) {
            for (Layer layer : layers) {
                try {
                    layer.close();
                } catch (IOException closeFailure) {
                    e.addSuppressed(closeFailure);
                }
            }
            throw e;
        }
    }

    @Override
    public long size() {
        return top.virtualSize();
    }

    @Override
    public boolean readOnly() {
        return top.readOnly();
    }

    @Override
    public boolean rotational() {
        for (Layer layer : layers) {
            if (layer instanceof Raw(StorageBackend backend) && backend.rotational()) {
                return true;
            }
        }
        return false;
    }

    @Override
    public int minimumBlockSize() {
        return 1;
    }

    /** The top layer's cluster size: aligned writes of whole clusters need no copy-up. */
    @Override
    public int preferredBlockSize() {
        return top.clusterSize();
    }

    /** Masking with ZERO clusters always works, whatever the file system can punch. */
    @Override
    public boolean supportsTrim() {
        return !top.readOnly();
    }

    /** Layers below the top, for tests. */
    int layerCount() {
        return layers.size();
    }

    // ---------------------------------------------------------------------------------------- reads

    @Override
    public void read(long offset, ByteBuffer dst) throws IOException {
        readLayer(0, offset, dst.slice());
        dst.position(dst.limit());
    }

    /** Fills all of {@code dst} (position 0 to its limit) with the chain's view from {@code level} down. */
    private void readLayer(int level, long offset, ByteBuffer dst) throws IOException {
        long length = dst.remaining();
        if (length == 0) {
            return;
        }
        if (level == layers.size()) {
            fillZero(dst);
            return;
        }
        Layer layer = layers.get(level);
        long size = layer.size();
        if (offset >= size) {
            fillZero(dst);
            return;
        }
        long end = offset + length;
        if (end > size) {
            int inside = (int) (size - offset);
            readLayer(level, offset, dst.slice(0, inside));
            fillZero(dst.slice(inside, (int) (end - size)));
            return;
        }
        switch (layer) {
            case Raw(StorageBackend backend) -> backend.read(offset, dst);
            case Overlay(OverlayImage image) -> {
                long position = offset;
                long lastCluster = image.clusterOf(end - 1);
                while (position < end) {
                    long cluster = image.clusterOf(position);
                    int state = image.state(cluster);
                    long runEnd = Math.min(end, image.clusterStart(image.runEnd(cluster, lastCluster + 1, state)));
                    ByteBuffer part = dst.slice((int) (position - offset), (int) (runEnd - position));
                    switch (state) {
                        case OverlayImage.DATA -> image.readData(position, part);
                        case OverlayImage.ZERO -> fillZero(part);
                        default -> readLayer(level + 1, position, part);
                    }
                    position = runEnd;
                }
            }
        }
    }

    private static void fillZero(ByteBuffer buffer) {
        MemorySegment.ofBuffer(buffer).fill((byte) 0);
    }

    // --------------------------------------------------------------------------------------- writes

    @Override
    public void write(long offset, ByteBuffer src) throws IOException {
        requireWritable("pwrite");
        long length = src.remaining();
        if (length == 0) {
            return;
        }
        long end = offset + length;
        long first = top.clusterOf(offset);
        long endCluster = top.clusterOf(end - 1) + 1;
        if (top.runEnd(first, endCluster, OverlayImage.DATA) == endCluster) {
            // Every cluster is already in the top layer: a plain write, no lock, no map change.
            top.writeData(offset, src);
            return;
        }
        int base = src.position();
        for (long chunk = first; chunk < endCluster; chunk += CHUNK_CLUSTERS) {
            long chunkEnd = Math.min(endCluster, chunk + CHUNK_CLUSTERS);
            long from = Math.max(offset, top.clusterStart(chunk));
            long to = Math.min(end, top.clusterStart(chunkEnd));
            ByteBuffer part = src.slice(base + (int) (from - offset), (int) (to - from));
            lockClusters(chunk, chunkEnd);
            try {
                writeLocked(from, part);
            } finally {
                unlockClusters(chunk, chunkEnd);
            }
            top.persistMap(chunk, chunkEnd);
        }
        src.position(src.limit());
    }

    /** Writes {@code src} at {@code offset}, holding the locks of every cluster it touches. */
    private void writeLocked(long offset, ByteBuffer src) throws IOException {
        long end = offset + src.remaining();
        long position = offset;
        while (position < end) {
            long cluster = top.clusterOf(position);
            long clusterStart = top.clusterStart(cluster);
            long clusterEnd = clusterEnd(cluster);
            ByteBuffer part;
            if (position == clusterStart && end >= clusterEnd) {
                // A run of whole clusters: written as they are, whatever they held, in one call.
                long runEnd = wholeClustersEnd(end);
                part = src.slice((int) (position - offset), (int) (runEnd - position));
                top.writeData(position, part);
                top.setState(cluster, top.clusterOf(runEnd - 1) + 1, OverlayImage.DATA);
                position = runEnd;
                continue;
            }
            long partEnd = Math.min(end, clusterEnd);
            part = src.slice((int) (position - offset), (int) (partEnd - position));
            writePartialCluster(cluster, position, part);
            position = partEnd;
        }
    }

    private long clusterStart(long cluster) {
        return top.clusterStart(cluster);
    }

    /** The last cluster boundary at or before {@code end}; the end of the export counts as one. */
    private long wholeClustersEnd(long end) {
        return end >= size() ? size() : top.clusterStart(top.clusterOf(end));
    }

    /** The end of {@code cluster}, cut at the virtual size. */
    private long clusterEnd(long cluster) {
        return Math.min(size(), top.clusterStart(cluster + 1));
    }

    /**
     * Writes part of one cluster, holding its lock: in place if the top holds it, otherwise by
     * copy-up.
     */
    private void writePartialCluster(long cluster, long offset, ByteBuffer src) throws IOException {
        int state = top.state(cluster);
        if (state == OverlayImage.DATA) {
            top.writeData(offset, src);
            return;
        }
        long clusterStart = top.clusterStart(cluster);
        int clusterLength = (int) (clusterEnd(cluster) - clusterStart);
        int inCluster = (int) (offset - clusterStart);
        int partLength = src.remaining();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buffer = arena.allocate(clusterLength, 4096);
            boolean lowerData = false;
            if (state == OverlayImage.UNALLOCATED) {
                readLayer(1, clusterStart, buffer.asByteBuffer());
                // Bytes of the lower layers that this write leaves in place must be durable before the map
                // claims the cluster, or a crash could turn them into zeroes.
                lowerData = !isZero(buffer, 0, inCluster)
                        || !isZero(buffer, inCluster + partLength, clusterLength - inCluster - partLength);
            }
            MemorySegment.copy(MemorySegment.ofBuffer(src), 0, buffer, inCluster, partLength);
            top.writeData(clusterStart, buffer.asByteBuffer());
            if (lowerData) {
                top.syncData();
            }
        }
        top.setState(cluster, cluster + 1, OverlayImage.DATA);
    }

    private static boolean isZero(MemorySegment segment, long offset, long length) {
        return length <= 0 || MemorySegment.mismatch(segment, offset, offset + length, ZEROES, 0, length) == -1;
    }

    // ------------------------------------------------------------------------------ trim and zeroes

    /** Masks the range: it reads as zeroes afterwards, and whole clusters release their storage. */
    @Override
    public void trim(long offset, long length) throws IOException {
        requireWritable("fallocate");
        zero(offset, length, true);
    }

    /**
     * Marks whole clusters ZERO (releasing their storage unless {@code mayPunchHole} is false) and
     * zeroes partial clusters at the edges, in place or through a copy-up. With {@code fastOnly},
     * refuses (changing nothing) when an edge cluster would need a copy-up.
     */
    @Override
    public boolean writeZeroes(long offset, long length, boolean mayPunchHole, boolean fastOnly) throws IOException {
        requireWritable("fallocate");
        if (fastOnly && length > 0) {
            long end = offset + length;
            long head = top.clusterOf(offset);
            long tail = top.clusterOf(end - 1);
            if (needsCopyUp(head, offset, end) || needsCopyUp(tail, offset, end)) {
                return false;
            }
        }
        zero(offset, length, mayPunchHole);
        return true;
    }

    /** Whether zeroing the part of {@code cluster} inside the range takes reading and writing a cluster. */
    private boolean needsCopyUp(long cluster, long offset, long end) {
        boolean whole = offset <= top.clusterStart(cluster) && end >= clusterEnd(cluster);
        return !whole && top.state(cluster) == OverlayImage.UNALLOCATED;
    }

    private void zero(long offset, long length, boolean mayPunchHole) throws IOException {
        // Callers keep requests inside the export; clipping keeps a stray one from punching past the data area.
        long end = Math.min(offset + length, size());
        if (end <= offset) {
            return;
        }
        long first = top.clusterOf(offset);
        long endCluster = top.clusterOf(end - 1) + 1;
        for (long chunk = first; chunk < endCluster; chunk += CHUNK_CLUSTERS) {
            long chunkEnd = Math.min(endCluster, chunk + CHUNK_CLUSTERS);
            lockClusters(chunk, chunkEnd);
            try {
                zeroLocked(Math.max(offset, top.clusterStart(chunk)), Math.min(end, clusterStart(chunkEnd)),
                        mayPunchHole);
            } finally {
                unlockClusters(chunk, chunkEnd);
            }
            top.persistMap(chunk, chunkEnd);
        }
    }

    private void zeroLocked(long offset, long end, boolean mayPunchHole) throws IOException {
        long position = offset;
        while (position < end) {
            long cluster = top.clusterOf(position);
            long clusterStart = top.clusterStart(cluster);
            if (position == clusterStart && end >= clusterEnd(cluster)) {
                long wholeEnd = wholeClustersEnd(end);
                long endCluster = top.clusterOf(wholeEnd - 1) + 1;
                // ZERO first: from here on nothing reads the data area, so punching it races no reader.
                top.setState(cluster, endCluster, OverlayImage.ZERO);
                if (mayPunchHole) {
                    top.punchData(clusterStart, top.clusterStart(endCluster) - clusterStart);
                }
                position = wholeEnd;
                continue;
            }
            long partEnd = Math.min(end, clusterEnd(cluster));
            switch (top.state(cluster)) {
                case OverlayImage.ZERO -> {
                    // already reads as zeroes
                }
                case OverlayImage.DATA -> top.zeroData(position, partEnd - position, mayPunchHole);
                default -> zeroUnallocatedPart(cluster, position, partEnd);
            }
            position = partEnd;
        }
    }

    /** Zeroes part of a cluster the top does not hold: a copy-up, or ZERO if the result is all zeroes. */
    private void zeroUnallocatedPart(long cluster, long offset, long end) throws IOException {
        long clusterStart = top.clusterStart(cluster);
        int clusterLength = (int) (clusterEnd(cluster) - clusterStart);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buffer = arena.allocate(clusterLength, 4096);
            readLayer(1, clusterStart, buffer.asByteBuffer());
            buffer.asSlice(offset - clusterStart, end - offset).fill((byte) 0);
            if (isZero(buffer, 0, clusterLength)) {
                top.setState(cluster, cluster + 1, OverlayImage.ZERO);
                return;
            }
            top.writeData(clusterStart, buffer.asByteBuffer());
            top.syncData();
        }
        top.setState(cluster, cluster + 1, OverlayImage.DATA);
    }

    // -------------------------------------------------------------------------------- flush, cache

    /** Writes any map block not yet written and fdatasyncs the top layer (data and map share its file). */
    @Override
    public void flush() throws IOException {
        top.flush();
    }

    @Override
    public void cache(long offset, long length) throws IOException {
        for (Layer layer : layers) {
            long end = Math.min(offset + length, layer.size());
            if (offset >= end) {
                continue;
            }
            switch (layer) {
                case Raw(StorageBackend backend) -> backend.cache(offset, end - offset);
                case Overlay(OverlayImage image) -> image.cacheData(offset, end - offset);
            }
        }
    }

    // ----------------------------------------------------------------------------- block status

    /**
     * base:allocation across the chain: hole+zero where no layer holds data, or where the
     * uppermost layer holding the bytes marks them ZERO, or past the end of a shorter layer;
     * data where an overlay layer holds DATA; for a raw bottom layer, its own allocation.
     */
    @Override
    public List<Extent> allocation(long offset, long length, int maxExtents) throws IOException {
        List<Extent> extents = new ArrayList<>();
        long end = Math.min(offset + length, size());
        long position = offset;
        for (int scanned = 0; position < end && scanned < MAX_RUNS_SCANNED; scanned++) {
            Run run = runAt(0, position, end);
            if (!extents.isEmpty()) {
                Extent last = extents.getLast();
                if (last.hole() == run.hole() && last.zero() == run.zero()) {
                    extents.set(extents.size() - 1, new Extent(last.length() + run.length(), run.hole(), run.zero()));
                    position += run.length();
                    continue;
                }
                if (extents.size() == maxExtents) {
                    break;
                }
            }
            extents.add(new Extent(run.length(), run.hole(), run.zero()));
            position += run.length();
        }
        return extents;
    }

    /**
     * qemu:allocation-depth: runs of (length, depth) from {@code offset}; depth 0 where no layer
     * holds the bytes, 1 for the top, 2 for {@code backing[0]}, and so on. An overlay layer holds
     * its DATA and ZERO clusters; a raw layer holds every byte within its size. Returns at least
     * one and at most {@code max} runs, never past the end of the export; they may end before
     * {@code offset + length}.
     */
    public List<DepthRun> depth(long offset, long length, int max) throws IOException {
        List<DepthRun> runs = new ArrayList<>();
        long end = Math.min(offset + length, size());
        long position = offset;
        for (int scanned = 0; position < end && scanned < MAX_RUNS_SCANNED; scanned++) {
            Run run = runAt(0, position, end);
            if (!runs.isEmpty()) {
                DepthRun last = runs.getLast();
                if (last.depth() == run.depth()) {
                    runs.set(runs.size() - 1, new DepthRun(last.length() + run.length(), run.depth()));
                    position += run.length();
                    continue;
                }
                if (runs.size() == max) {
                    break;
                }
            }
            runs.add(new DepthRun(run.length(), run.depth()));
            position += run.length();
        }
        return runs;
    }

    /** The run of one state that starts at {@code position} in the view from {@code level} down, cut at {@code end}. */
    private Run runAt(int level, long position, long end) throws IOException {
        if (level == layers.size()) {
            return new Run(end - position, 0, true, true);
        }
        Layer layer = layers.get(level);
        if (position >= layer.size()) {
            return new Run(end - position, 0, true, true);
        }
        long limit = Math.min(end, layer.size());
        return switch (layer) {
            case Raw(StorageBackend backend) -> {
                Extent extent = backend.allocation(position, limit - position, 1).getFirst();
                yield new Run(Math.min(extent.length(), limit - position), level + 1, extent.hole(), extent.zero());
            }
            case Overlay(OverlayImage image) -> {
                long cluster = image.clusterOf(position);
                int state = image.state(cluster);
                long runEnd = Math.min(limit,
                        image.clusterStart(image.runEnd(cluster, image.clusterOf(limit - 1) + 1, state)));
                yield switch (state) {
                    case OverlayImage.DATA -> new Run(runEnd - position, level + 1, false, false);
                    case OverlayImage.ZERO -> new Run(runEnd - position, level + 1, true, true);
                    default -> runAt(level + 1, position, runEnd);
                };
            }
        };
    }

    // -------------------------------------------------------------------------------------- misc

    @Override
    public void close() throws IOException {
        IOException failure = null;
        for (Layer layer : layers) {
            try {
                layer.close();
            } catch (IOException e) {
                if (failure == null) {
                    failure = e;
                } else {
                    failure.addSuppressed(e);
                }
            }
        }
        if (failure != null) {
            throw failure;
        }
    }

    private void lockClusters(long first, long end) {
        for (int stripe : stripes(first, end)) {
            clusterLocks[stripe].lock();
        }
    }

    private void unlockClusters(long first, long end) {
        for (int stripe : stripes(first, end)) {
            clusterLocks[stripe].unlock();
        }
    }

    /** The distinct lock stripes of clusters {@code [first, end)}, ascending, so that lockers never deadlock. */
    private static int[] stripes(long first, long end) {
        int[] stripes = new int[(int) (end - first)];
        for (int i = 0; i < stripes.length; i++) {
            stripes[i] = (int) ((first + i) % LOCK_STRIPES);
        }
        Arrays.sort(stripes);
        return stripes;
    }

    private void requireWritable(String call) throws ErrnoException {
        if (top.readOnly()) {
            throw new ErrnoException(call, top.path().toString(), Errno.EROFS);
        }
    }
}
