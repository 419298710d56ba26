package io.kubenbd.node.storage;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.IntConsumer;
import java.util.zip.CRC32C;

/**
 * One layer in kube-nbd's own image format ("overlay image"): a fixed header, a cluster map
 * with two bits per cluster, and a sparse data area in which every cluster has a fixed home,
 * so no allocation table is needed and unwritten clusters stay holes in the file.
 *
 * <h2>Layout</h2>
 * All integers are little-endian. Offsets are in bytes from the start of the file.
 * <table>
 * <caption>Header (one 4 KiB block at offset 0)</caption>
 * <tr><th>Offset</th><th>Size</th><th>Field</th></tr>
 * <tr><td>0</td><td>8</td><td>magic, the ASCII bytes {@code KNBDOVL1}</td></tr>
 * <tr><td>8</td><td>4</td><td>format version, 1</td></tr>
 * <tr><td>12</td><td>4</td><td>cluster size in bytes: a power of two, 4 KiB to 2 MiB (64 KiB by default)</td></tr>
 * <tr><td>16</td><td>8</td><td>virtual size in bytes (the size of the disk this layer describes)</td></tr>
 * <tr><td>24</td><td>8</td><td>flags; none are defined, and an image with any set is refused</td></tr>
 * <tr><td>32</td><td>8</td><td>map offset: 4096</td></tr>
 * <tr><td>40</td><td>8</td><td>map length: {@code ceil(clusters / 4)} rounded up to 4096</td></tr>
 * <tr><td>48</td><td>8</td><td>data offset: {@code map offset + map length} rounded up to the cluster size</td></tr>
 * <tr><td>56</td><td>4036</td><td>reserved, zero</td></tr>
 * <tr><td>4092</td><td>4</td><td>CRC-32C (Castagnoli) of bytes 0 to 4091</td></tr>
 * </table>
 * where {@code clusters = ceil(virtual size / cluster size)}.
 *
 * <table>
 * <caption>Cluster map (at the map offset)</caption>
 * <tr><th>Bits</th><th>Meaning</th></tr>
 * <tr><td colspan="2">Cluster {@code i} is described by bits {@code 2*(i%4)} and {@code 2*(i%4)+1} of map
 *     byte {@code i/4}. Bits past the last cluster are zero.</td></tr>
 * <tr><td>0 UNALLOCATED</td><td>this layer does not hold the cluster; reads fall through to the layer below</td></tr>
 * <tr><td>1 DATA</td><td>the cluster's bytes are at {@code data offset + i * cluster size}</td></tr>
 * <tr><td>2 ZERO</td><td>the cluster reads as zeroes and masks the layers below; its data-area cluster is
 *     meaningless (usually a hole)</td></tr>
 * <tr><td>3</td><td>reserved; an image containing it is refused as corrupt</td></tr>
 * </table>
 *
 * <p>The data area follows at the data offset; the file is created sparse with length
 * {@code data offset + clusters * cluster size}. The data-area cluster of an UNALLOCATED or
 * ZERO cluster is never read, so leftovers there (from a crash between writing data and
 * writing the map) are harmless.
 *
 * <h2>Update rules</h2>
 * The map lives in memory ({@link AtomicLongArray}, 32 clusters per word) and on disk. A change
 * to a cluster's state is written to disk (the whole 4 KiB map block containing it, under that
 * block's lock, so the last write of a block always carries every earlier change) before the
 * request that caused it is acknowledged. A block counts as written only once its write has
 * returned: a request or FLUSH that finds another thread writing the block waits for it rather
 * than taking the block for clean. The data and the map share one file, so one
 * fdatasync makes both durable. A cluster becomes DATA only after its data are written; when a
 * partial write copied bytes up from a lower layer, the data are made durable before the map
 * says DATA, so that a crash can never turn bytes the client did not write into zeroes.
 * A cluster leaves DATA only for ZERO, never for UNALLOCATED, so a crash can never make
 * backing data reappear in a range this layer has claimed.
 *
 * <p>The backing chain is not recorded in the image: whoever opens it names the layers below.
 */
public final class OverlayImage implements AutoCloseable {
    /** The eight bytes every overlay image starts with. */
    public static final byte[] MAGIC = {'K', 'N', 'B', 'D', 'O', 'V', 'L', '1'};
    public static final int VERSION = 1;
    public static final int DEFAULT_CLUSTER_SIZE = 64 * 1024;
    public static final int MIN_CLUSTER_SIZE = 4096;
    public static final int MAX_CLUSTER_SIZE = 2 * 1024 * 1024;
    public static final int HEADER_SIZE = 4096;
    /** The map is written in blocks of this many bytes. */
    public static final int MAP_BLOCK_SIZE = 4096;

    static final int UNALLOCATED = 0;
    static final int DATA = 1;
    static final int ZERO = 2;

    private static final int CRC_OFFSET = HEADER_SIZE - 4;
    private static final int CLUSTERS_PER_WORD = 32;
    private static final int WORDS_PER_MAP_BLOCK = MAP_BLOCK_SIZE / Long.BYTES;
    private static final long LOW_BITS = 0x5555_5555_5555_5555L;
    private static final int MAP_LOCKS = 64;

    private final Path path;
    private final SparseFileBackend file;
    private final long virtualSize;
    private final int clusterSize;
    private final int clusterShift;
    private final long clusters;
    private final long mapOffset;
    private final long dataOffset;
    private final AtomicLongArray map;
    private final ReentrantLock[] mapLocks = new ReentrantLock[MAP_LOCKS];
    /**
     * Map blocks changed in memory and not yet written; changed under the block's lock, and
     * cleared under it only once the block is written (see {@link #persistMapBlock}).
     */
    private final Set<Integer> dirtyMapBlocks = ConcurrentHashMap.newKeySet();
    /** For tests: runs after a map block's bytes are taken and before they are written. */
    private volatile IntConsumer beforeMapBlockWrite = block -> { };

    private OverlayImage(Path path, SparseFileBackend file, Header header, AtomicLongArray map) {
        this.path = path;
        this.file = file;
        this.virtualSize = header.virtualSize();
        this.clusterSize = header.clusterSize();
        this.clusterShift = Integer.numberOfTrailingZeros(clusterSize);
        this.clusters = header.clusters();
        this.mapOffset = header.mapOffset();
        this.dataOffset = header.dataOffset();
        this.map = map;
        for (int i = 0; i < MAP_LOCKS; i++) {
            mapLocks[i] = new ReentrantLock();
        }
    }

    /** Creates an empty top layer of the given virtual size (for {@code nbd-node image create --size BYTES PATH}). */
    public static void create(Path path, long virtualSize) throws IOException {
        create(path, virtualSize, DEFAULT_CLUSTER_SIZE);
    }

    /** Creates an empty image with the given cluster size; fails if {@code path} exists. */
    public static void create(Path path, long virtualSize, int clusterSize) throws IOException {
        Header header = Header.of(virtualSize, clusterSize);
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ByteBuffer bytes = header.encode();
            while (bytes.hasRemaining()) {
                channel.write(bytes, bytes.position());
            }
            // The map starts all zero (UNALLOCATED), as do the data area's holes.
            channel.truncate(header.fileLength());
            if (channel.size() < header.fileLength()) {
                // truncate never extends; writing the last byte does, leaving everything before it sparse.
                channel.write(ByteBuffer.allocate(1), header.fileLength() - 1);
            }
            channel.force(true);
        }
    }

    /** True when {@code path} is a regular file starting with the overlay magic (the header is not checked). */
    public static boolean isOverlay(Path path) throws IOException {
        if (!Files.isRegularFile(path)) {
            return false;
        }
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            ByteBuffer start = ByteBuffer.allocate(MAGIC.length);
            while (start.hasRemaining() && channel.read(start, start.position()) > 0) {
                // keep reading
            }
            return !start.hasRemaining() && java.util.Arrays.equals(start.array(), MAGIC);
        }
    }

    /** Opens an existing image, checking its header and map. */
    static OverlayImage open(Path path, boolean readOnly) throws IOException {
        NativeFile nativeFile = NativeFile.open(path, readOnly);
        try {
            if (!readOnly) {
                try {
                    nativeFile.lockExclusively();
                } catch (ErrnoException e) {
                    if (e.errno() != Errno.EAGAIN) {
                        throw e;
                    }
                    // Two writers would each keep their own cluster map and overwrite each other's.
                    throw new IOException(path + " is already open for writing (another export or server uses it)");
                }
            }
            FileStatus status = nativeFile.status();
            if (status.kind() != FileStatus.Kind.REGULAR_FILE) {
                throw new IOException(path + ": an overlay image must be a regular file");
            }
            ByteBuffer headerBytes = ByteBuffer.allocate(HEADER_SIZE);
            if (status.size() < HEADER_SIZE) {
                throw new IOException(path + ": not an overlay image (shorter than its header)");
            }
            nativeFile.read(0, headerBytes);
            Header header = Header.decode(path, headerBytes.flip());
            if (status.size() < header.dataOffset()) {
                throw new IOException(path + ": overlay image truncated inside its cluster map ("
                        + status.size() + " bytes, map ends at " + (header.mapOffset() + header.mapLength()) + ")");
            }
            AtomicLongArray map = readMap(path, nativeFile, header);
            SparseFileBackend file = SparseFileBackend.open(nativeFile, Math.max(status.size(), header.fileLength()));
            return new OverlayImage(path, file, header, map);
        } catch (IOException | RuntimeException e) {
            try {
                nativeFile.close();
            } catch (IOException closeFailure) {
                e.addSuppressed(closeFailure);
            }
            throw e;
        }
    }

    private static AtomicLongArray readMap(Path path, NativeFile file, Header header) throws IOException {
        ByteBuffer bytes = ByteBuffer.allocate(Math.toIntExact(header.mapLength())).order(ByteOrder.LITTLE_ENDIAN);
        file.read(header.mapOffset(), bytes);
        bytes.flip();
        long words = (header.clusters() + CLUSTERS_PER_WORD - 1) / CLUSTERS_PER_WORD;
        AtomicLongArray map = new AtomicLongArray(Math.toIntExact(header.mapLength() / Long.BYTES));
        for (int w = 0; w < map.length(); w++) {
            long word = bytes.getLong(w * Long.BYTES);
            if ((word & (word >>> 1) & LOW_BITS) != 0) {
                throw new IOException(path + ": corrupt cluster map (reserved state in map word " + w + ")");
            }
            long firstCluster = (long) w * CLUSTERS_PER_WORD;
            long valid = Math.max(0, Math.min(CLUSTERS_PER_WORD, header.clusters() - firstCluster));
            long validMask = valid == CLUSTERS_PER_WORD ? -1L : (1L << (2 * valid)) - 1;
            if (w >= words ? word != 0 : (word & ~validMask) != 0) {
                throw new IOException(path + ": corrupt cluster map (bits set past the last cluster)");
            }
            map.set(w, word);
        }
        return map;
    }

    Path path() {
        return path;
    }

    long virtualSize() {
        return virtualSize;
    }

    int clusterSize() {
        return clusterSize;
    }

    long clusters() {
        return clusters;
    }

    boolean readOnly() {
        return file.readOnly();
    }

    SparseFileBackend file() {
        return file;
    }

    long clusterOf(long offset) {
        return offset >>> clusterShift;
    }

    long clusterStart(long cluster) {
        return cluster << clusterShift;
    }

    /** The state of {@code cluster}: {@link #UNALLOCATED}, {@link #DATA} or {@link #ZERO}. */
    int state(long cluster) {
        long word = map.get((int) (cluster / CLUSTERS_PER_WORD));
        return (int) (word >>> (2 * (cluster % CLUSTERS_PER_WORD))) & 3;
    }

    /**
     * The first cluster at or after {@code cluster}, and before {@code limit}, whose state
     * differs from {@code state}; {@code limit} if there is none. Skips whole map words at once.
     */
    long runEnd(long cluster, long limit, int state) {
        long pattern = state * LOW_BITS;
        long c = cluster;
        while (c < limit) {
            if (c % CLUSTERS_PER_WORD == 0 && limit - c >= CLUSTERS_PER_WORD
                    && map.get((int) (c / CLUSTERS_PER_WORD)) == pattern) {
                c += CLUSTERS_PER_WORD;
                continue;
            }
            if (state(c) != state) {
                return c;
            }
            c++;
        }
        return limit;
    }

    /** Reads bytes of this layer's data area; only meaningful where the clusters are DATA. */
    void readData(long offset, ByteBuffer dst) throws IOException {
        file.read(dataOffset + offset, dst);
    }

    void writeData(long offset, ByteBuffer src) throws IOException {
        file.write(dataOffset + offset, src);
    }

    /** Releases data-area storage; the range's data-area contents are undefined afterwards. */
    void punchData(long offset, long length) throws IOException {
        file.trim(dataOffset + offset, length);
    }

    /** Zeroes part of a DATA cluster in place. */
    void zeroData(long offset, long length, boolean mayPunchHole) throws IOException {
        file.writeZeroes(dataOffset + offset, length, mayPunchHole, false);
    }

    /** Readahead of the data area; harmless where the clusters are not DATA. */
    void cacheData(long offset, long length) throws IOException {
        file.cache(dataOffset + offset, length);
    }

    void syncData() throws IOException {
        file.flush();
    }

    /**
     * Sets the state of clusters {@code [first, end)} in memory and marks their map blocks dirty;
     * the caller holds the locks that keep other writers off these clusters.
     */
    void setState(long first, long end, int state) {
        long c = first;
        while (c < end) {
            int block = mapBlockOf(c);
            ReentrantLock lock = mapLocks[block % MAP_LOCKS];
            lock.lock();
            try {
                long blockEnd = Math.min(end, (long) (block + 1) * WORDS_PER_MAP_BLOCK * CLUSTERS_PER_WORD);
                boolean changed = false;
                for (; c < blockEnd; c++) {
                    int w = (int) (c / CLUSTERS_PER_WORD);
                    int shift = (int) (2 * (c % CLUSTERS_PER_WORD));
                    long old;
                    long updated;
                    do {
                        old = map.get(w);
                        updated = (old & ~(3L << shift)) | ((long) state << shift);
                    } while (old != updated && !map.compareAndSet(w, old, updated));
                    changed |= old != updated;
                }
                if (changed) {
                    dirtyMapBlocks.add(block);
                }
            } finally {
                lock.unlock();
            }
        }
    }

    /** Writes the map blocks holding clusters {@code [first, end)} if they have unwritten changes. */
    void persistMap(long first, long end) throws IOException {
        if (end <= first) {
            return;
        }
        for (int block = mapBlockOf(first); block <= mapBlockOf(end - 1); block++) {
            if (dirtyMapBlocks.contains(block)) {
                persistMapBlock(block);
            }
        }
    }

    /** Writes every map block with unwritten changes (before fdatasync, from flush). */
    void persistAllMap() throws IOException {
        for (Integer block : dirtyMapBlocks.toArray(Integer[]::new)) {
            persistMapBlock(block);
        }
    }

    private void persistMapBlock(int block) throws IOException {
        ReentrantLock lock = mapLocks[block % MAP_LOCKS];
        lock.lock();
        try {
            if (!dirtyMapBlocks.contains(block)) {
                return;
            }
            ByteBuffer bytes = ByteBuffer.allocateDirect(MAP_BLOCK_SIZE).order(ByteOrder.LITTLE_ENDIAN);
            int firstWord = block * WORDS_PER_MAP_BLOCK;
            for (int i = 0; i < WORDS_PER_MAP_BLOCK; i++) {
                bytes.putLong(map.get(firstWord + i));
            }
            beforeMapBlockWrite.accept(block);
            file.write(mapOffset + (long) block * MAP_BLOCK_SIZE, bytes.flip());
            // Only now: a writer or FLUSH that saw the block dirty waits on its lock for this write,
            // and one that finds it clean knows the block on disk already carries its change.
            dirtyMapBlocks.remove(block);
        } finally {
            lock.unlock();
        }
    }

    /** For tests: pauses or observes map block writes between taking the block's bytes and writing them. */
    void beforeMapBlockWrite(IntConsumer hook) {
        beforeMapBlockWrite = hook;
    }

    private static int mapBlockOf(long cluster) {
        return (int) (cluster / CLUSTERS_PER_WORD / WORDS_PER_MAP_BLOCK);
    }

    /** Writes unwritten map blocks, then makes data and map durable with one fdatasync. */
    void flush() throws IOException {
        if (!file.readOnly()) {
            persistAllMap();
            file.flush();
        }
    }

    @Override
    public void close() throws IOException {
        try {
            flush();
        } finally {
            file.close();
        }
    }

    /** The decoded header. */
    record Header(long virtualSize, int clusterSize, long flags, long mapOffset, long mapLength, long dataOffset) {
        static Header of(long virtualSize, int clusterSize) {
            if (virtualSize <= 0) {
                throw new IllegalArgumentException("virtual size must be positive: " + virtualSize);
            }
            if (Integer.bitCount(clusterSize) != 1 || clusterSize < MIN_CLUSTER_SIZE || clusterSize > MAX_CLUSTER_SIZE) {
                throw new IllegalArgumentException("cluster size must be a power of two from "
                        + MIN_CLUSTER_SIZE + " to " + MAX_CLUSTER_SIZE + ": " + clusterSize);
            }
            long clusters = ceilDiv(virtualSize, clusterSize);
            long mapLength = roundUp(ceilDiv(clusters, 4), MAP_BLOCK_SIZE);
            if (mapLength > Integer.MAX_VALUE - MAP_BLOCK_SIZE) {
                throw new IllegalArgumentException("virtual size too large for cluster size " + clusterSize);
            }
            long dataOffset = roundUp(HEADER_SIZE + mapLength, clusterSize);
            return new Header(virtualSize, clusterSize, 0, HEADER_SIZE, mapLength, dataOffset);
        }

        long clusters() {
            return ceilDiv(virtualSize, clusterSize);
        }

        long fileLength() {
            return dataOffset + clusters() * clusterSize;
        }

        ByteBuffer encode() {
            ByteBuffer b = ByteBuffer.allocate(HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
            b.put(MAGIC).putInt(VERSION).putInt(clusterSize).putLong(virtualSize).putLong(flags)
                    .putLong(mapOffset).putLong(mapLength).putLong(dataOffset);
            CRC32C crc = new CRC32C();
            crc.update(b.array(), 0, CRC_OFFSET);
            b.putInt(CRC_OFFSET, (int) crc.getValue());
            return b.position(0);
        }

        static Header decode(Path path, ByteBuffer bytes) throws IOException {
            ByteBuffer b = bytes.order(ByteOrder.LITTLE_ENDIAN);
            byte[] magic = new byte[MAGIC.length];
            b.get(0, magic);
            if (!java.util.Arrays.equals(magic, MAGIC)) {
                throw new IOException(path + ": not an overlay image (bad magic)");
            }
            CRC32C crc = new CRC32C();
            crc.update(b.slice(0, CRC_OFFSET));
            int stored = b.getInt(CRC_OFFSET);
            if (stored != (int) crc.getValue()) {
                throw new IOException(String.format("%s: overlay image header is corrupt (CRC-32C %08x, header says %08x)",
                        path, (int) crc.getValue(), stored));
            }
            int version = b.getInt(8);
            if (version != VERSION) {
                throw new IOException(path + ": unsupported overlay image version " + version);
            }
            int clusterSize = b.getInt(12);
            long virtualSize = b.getLong(16);
            long flags = b.getLong(24);
            if (flags != 0) {
                throw new IOException(path + ": overlay image has unknown flags 0x" + Long.toHexString(flags));
            }
            Header expected;
            try {
                expected = of(virtualSize, clusterSize);
            } catch (IllegalArgumentException e) {
                throw new IOException(path + ": overlay image header is invalid: " + e.getMessage(), e);
            }
            if (b.getLong(32) != expected.mapOffset() || b.getLong(40) != expected.mapLength()
                    || b.getLong(48) != expected.dataOffset()) {
                throw new IOException(path + ": overlay image header is invalid (map/data offsets "
                        + b.getLong(32) + "/" + b.getLong(40) + "/" + b.getLong(48) + " do not match its sizes)");
            }
            return expected;
        }
    }

    static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }

    static long roundUp(long a, long b) {
        return ceilDiv(a, b) * b;
    }
}
