package io.kubenbd.node.server;

import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.control.v1.Bitmap;
import io.kubenbd.node.control.v1.BitmapRequest;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ListExportsRequest;
import io.kubenbd.node.protocol.BlockDescriptor;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.ReplyChunk;
import io.kubenbd.node.protocol.RequestHeader;
import io.kubenbd.node.protocol.TransmissionFlags;
import io.kubenbd.node.storage.OverlayImage;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

/**
 * Crash consistency of the server as a whole (issue 11): several connections write to one
 * export at once (plain and FUA writes, WRITE_ZEROES, TRIM, FLUSH), the server process is
 * killed with SIGKILL at a random moment, restarted on the same files, and every block must
 * hold what the acknowledgements promised: a write acknowledged with FUA, or acknowledged
 * before a FLUSH (on any connection) was sent whose reply then arrived, reads back exactly;
 * anything sent later may or may not have landed. Every dirty bitmap is either reported
 * inconsistent after the crash or exact; after a clean stop (SIGTERM, also at a random moment)
 * it must be consistent and exact, and every acknowledged write must be there.
 *
 * <p>What this does and does not test: SIGKILL ends the process, not the machine, so the
 * kernel's page cache survives and fdatasync is never put to the test. What is tested is the
 * server's own ordering: what it has written (data, overlay cluster map, bitmap state) by the
 * time it acknowledges a request or a FLUSH. Power loss needs a VM or dm-log-writes.
 *
 * <p>The model: the export is cut into 4 KiB blocks and every block's content is a function
 * of a seed and the block index (zero for seed 0), so a block read back names the write it
 * came from. For every block the model keeps the history of versions since the last check:
 * the content found at restart, then one version per request sent. Requests are never in
 * flight on the same block twice, so each block's versions are ordered. After a restart a
 * block must equal its latest durable version or any later one; a TRIM version also allows
 * whatever the version before it allowed (trimmed content is "old or zero"). The content
 * found becomes the next base.
 *
 * <p>Two things aim the kills at the moments that matter. Half the kills are not at a random
 * time but right after the next FUA or FLUSH reply arrives, when whatever the server still had
 * to write for that promise (another thread's overlay map block, say) may be in flight. And in
 * a seeded half of the cycles the server's threads are confined to one CPU, so they are
 * preempted inside their critical sections far more often. Even so a race whose window is a
 * single 4 KiB pwrite is rarely hit; the unit tests of the storage classes are the sharp tool
 * for those, this test is the net under the whole server.
 *
 * <p>The seed ({@code -Dcrash.seed=N}) fixes the op choices, sizes, kill delays and which
 * cycles are pinned or kill on a reply; thread interleaving is still up to the scheduler. {@code -Dcrash.rounds=N} runs N
 * times as many cycles, for soak runs.
 */
class CrashConsistencyIT {
    private static final Duration LIMIT = Duration.ofSeconds(60);
    private static final int BLOCK = 4096;
    private static final long SIZE = 16L << 20;
    private static final int BLOCKS = (int) (SIZE / BLOCK);
    /** The first 1 MiB gets half the traffic, so blocks see several versions per cycle. */
    private static final int HOT_BLOCKS = 256;
    private static final int CONNECTIONS = 4;
    private static final int IN_FLIGHT_PER_CONNECTION = 8;
    private static final long GRANULARITY = 64 << 10;
    private static final int GRANULES = (int) (SIZE / GRANULARITY);
    private static final String EXPORT = "v";
    private static final String BITMAP = "b1";

    /** Content ids: 0 reads as zeroes, positive ids are seeds. */
    private static final long ZERO = 0;
    private static final long TRIMMED = -1;
    private static final long UNKNOWN = -2;
    private static final long BASE_SEED = 1;
    private static final long MIDDLE_SEED = 2;
    private static final long TAG = 0x4b4e4244_43525348L;

    private static final long SEED = Long.getLong("crash.seed", new Random().nextLong());
    /** Multiplies the number of cycles, for soak runs. */
    private static final int ROUNDS = Integer.getInteger("crash.rounds", 1);

    private ScratchDir scratch;

    @BeforeEach
    void createScratch() throws Exception {
        scratch = ScratchDir.create("kube-nbd-crash-");
        System.out.println("CrashConsistencyIT seed " + SEED + " (rerun with -Dcrash.seed=" + SEED + ")");
    }

    @AfterEach
    void deleteScratch() throws Exception {
        scratch.close();
    }

    @Test
    void aRawFileKeepsEveryFlushedWriteAcrossKills() throws Exception {
        Path image = scratch.sparseFile("disk.raw", SIZE);
        long[] initial = new long[BLOCKS];
        fillBase(image, initial);
        run("raw", image + ",bitmap=" + BITMAP + ":64K,max-connections=8", initial, 26, 2, SEED);
    }

    @Test
    void anOverlayOverABackingChainKeepsEveryFlushedWriteAcrossKills() throws Exception {
        Path base = scratch.sparseFile("base.raw", SIZE);
        long[] initial = new long[BLOCKS];
        fillBase(base, initial);
        Path middle = scratch.resolve("middle.ovl");
        OverlayImage.create(middle, SIZE, 16 * 1024);
        fillMiddle(middle, base, initial);
        Path top = scratch.resolve("top.ovl");
        OverlayImage.create(top, SIZE, OverlayImage.DEFAULT_CLUSTER_SIZE);
        run("overlay", top + ",backing=" + middle + ",backing=" + base + ",bitmap=" + BITMAP + ":64K,max-connections=8",
                initial, 28, 2, SEED ^ 0x5DEECE66DL);
    }

    // ------------------------------------------------------------------ the loop

    private void run(String config, String exportSpec, long[] initial, int kills, int cleanStops, long seed)
            throws Exception {
        Random random = new Random(seed);
        Stats stats = new Stats(config);
        Model model = new Model(initial);
        Path socket = scratch.resolve("control-" + config + ".sock");
        kills *= ROUNDS;
        cleanStops *= ROUNDS;
        int cycles = kills + cleanStops;
        Set<Integer> cleanCycles = new LinkedHashSet<>();
        while (cleanCycles.size() < cleanStops) {
            cleanCycles.add(1 + random.nextInt(cycles - 1));
        }
        long started = System.nanoTime();
        ServerProcess server = ServerProcess.nbdNode("--state-dir", scratch.resolve("state-" + config).toString(),
                "--control", "unix:" + socket, "--export", EXPORT + "=" + exportSpec);
        try {
            PeerCommand.requireInstalled("taskset");
            // The first check is before any write: the chain reads as it was built.
            checkAfterRestart(server, socket, model, stats, config + " initial", false, true);
            for (int cycle = 0; cycle < cycles; cycle++) {
                boolean clean = cleanCycles.contains(cycle);
                String where = config + " cycle " + cycle + (clean ? " (SIGTERM)" : " (SIGKILL)") + " seed " + seed;
                int delay = 50 + random.nextInt(751);
                if (random.nextBoolean()) {
                    pinToOneCpu(server);
                    where += " (one CPU)";
                    stats.pinnedCycles++;
                }
                // Half the kills come right after a FUA or FLUSH reply arrives: a promise was just made,
                // and whatever the server still had to write for it is in flight.
                boolean killOnReply = !clean && random.nextBoolean();
                if (killOnReply) {
                    where += " (on a reply)";
                }
                Process process = server.process();
                Writers writers = new Writers(server.port(), model, stats, random.nextLong(), killOnReply ? process : null);
                try {
                    writers.start();
                    Thread.sleep(delay);
                    if (killOnReply) {
                        writers.killOnNextPromise();
                        if (!process.waitFor(2, TimeUnit.SECONDS)) {
                            process.destroyForcibly();
                        } else {
                            stats.killsOnReply++;
                        }
                    }
                    if (clean) {
                        assertThat(server.terminate(LIMIT)).as(where + ": exit code after SIGTERM").isZero();
                        stats.cleanStops++;
                    } else {
                        process.destroyForcibly();
                        assertThat(process.waitFor(10, TimeUnit.SECONDS)).as(where + ": SIGKILL").isTrue();
                        stats.kills++;
                    }
                } finally {
                    writers.stopAndJoin();
                }
                assertThat(writers.errors()).as(where + ": error replies other than ESHUTDOWN").isZero();
                if (clean) {
                    stats.shutdownErrors += writers.shutdownErrors();
                } else {
                    assertThat(writers.shutdownErrors()).as(where + ": ESHUTDOWN from a server that was not stopping")
                            .isZero();
                }
                String previousLog = server.log();
                long t0 = System.nanoTime();
                ServerProcess stopped = server;
                server = stopped.restart();
                stopped.close();
                long t1 = System.nanoTime();
                try {
                    checkAfterRestart(server, socket, model, stats, where, clean, false);
                    stats.restartSeconds += (t1 - t0) / 1e9;
                    stats.checkSeconds += (System.nanoTime() - t1) / 1e9;
                } catch (AssertionError e) {
                    System.out.println("---- server log before the " + (clean ? "stop" : "kill") + " (" + where + ")\n"
                            + tail(previousLog) + "\n---- server log after restart\n" + tail(server.log()));
                    throw e;
                }
            }
            assertThat(server.terminate(LIMIT)).as(config + ": exit code of the final SIGTERM").isZero();
        } finally {
            server.close();
            stats.seconds = (System.nanoTime() - started) / 1e9;
            System.out.println(stats);
        }
        assertThat(stats.kills).as("kills").isEqualTo(kills);
        assertThat(stats.flushesCompleted.get()).as("completed FLUSHes, or nothing was required to survive").isPositive();
        assertThat(stats.durableBlocksChecked).as("blocks whose content a FLUSH or FUA pinned").isPositive();
        assertThat(stats.bitmapsExact).as("exact bitmaps seen (at least after each clean stop)")
                .isGreaterThanOrEqualTo(cleanStops);
    }

    /**
     * Reads the whole export and checks every block against the model, then the bitmap;
     * the content found becomes the model's new base.
     */
    private void checkAfterRestart(ServerProcess server, Path socket, Model model, Stats stats, String where,
                                   boolean clean, boolean initial) throws Exception {
        Bitmap[] bitmap = new Bitmap[2];
        boolean recording;
        BitSet dirty = null;
        long[] found = new long[BLOCKS];
        try (NbdClient client = NbdClient.connect("127.0.0.1", server.port(), LIMIT)) {
            client.negotiateStructuredReplies();
            List<OptionReply.MetaContext> selected = client.setMetaContexts(EXPORT, List.of("qemu:dirty-bitmap:" + BITMAP));
            // One control session: the state, and an inconsistent bitmap cleared so the next cycle records.
            bitmap = controlWhenUp(socket, stub -> {
                Bitmap before = stub.listExports(ListExportsRequest.getDefaultInstance()).getExportsList().stream()
                        .filter(e -> e.getName().equals(EXPORT)).flatMap(e -> e.getBitmapsList().stream())
                        .filter(b -> b.getName().equals(BITMAP)).findFirst()
                        .orElseThrow(() -> new AssertionError(where + ": bitmap " + BITMAP + " missing"));
                return new Bitmap[] {before, before.getState().equals("inconsistent") ? stub.clearBitmap(
                        BitmapRequest.newBuilder().setExport(EXPORT).setName(BITMAP).build()) : null};
            });
            recording = bitmap[0].getState().equals("recording");
            assertThat(selected).as(where + ": offered over NBD only while consistent (" + bitmap[0] + ")")
                    .hasSize(recording ? 1 : 0);
            client.go(EXPORT);
            int chunk = 1 << 20;
            for (long offset = 0; offset < SIZE; offset += chunk) {
                byte[] data = client.read(offset, chunk);
                for (int i = 0; i < chunk / BLOCK; i++) {
                    int block = (int) (offset / BLOCK) + i;
                    found[block] = identify(data, i * BLOCK, block);
                }
            }
            if (recording) {
                dirty = dirtyGranules(client);
            }
            client.disconnect();
        }

        List<String> violations = model.check(found, clean, stats);
        if (!violations.isEmpty()) {
            fail(where + ": " + violations.size() + " block(s) do not hold what was acknowledged"
                    + (clean ? " (clean stop: every acknowledged request counts)" : "")
                    + "\n  " + String.join("\n  ", violations.subList(0, Math.min(20, violations.size()))));
        }

        if (initial) {
            assertThat(recording).as(where + ": a new bitmap records").isTrue();
        } else if (clean) {
            assertThat(bitmap[0].getState()).as(where + ": bitmap after a clean stop (" + bitmap[0].getReason() + ")")
                    .isEqualTo("recording");
        }
        if (recording) {
            String problem = model.bitmapProblem(dirty);
            if (problem != null) {
                fail(where + ": bitmap " + BITMAP + " is reported consistent but is wrong: " + problem);
            }
            stats.bitmapsExact++;
        } else {
            assertThat(bitmap[0].getState()).as(where + ": bitmap state").isEqualTo("inconsistent");
            stats.bitmapsInconsistent++;
            Bitmap cleared = bitmap[1];
            assertThat(cleared.getState()).as(where + ": bitmap after clear").isEqualTo("recording");
            assertThat(cleared.getDirtyBytes()).isZero();
            model.bitmapCleared();
        }
        model.rebase(found);
    }

    /**
     * Confines every thread of the server to one CPU, so the scheduler preempts them inside
     * their critical sections far more often: races between writers, FLUSH and the overlay's
     * map updates get wide windows for the kill to land in.
     */
    private static void pinToOneCpu(ServerProcess server) throws Exception {
        PeerCommand.run(LIMIT, "taskset", "-a", "-p", "-c", "0", String.valueOf(server.process().pid())).assertSuccess();
    }

    private static BitSet dirtyGranules(NbdClient client) throws IOException {
        BitSet dirty = new BitSet(GRANULES);
        long offset = 0;
        while (offset < SIZE) {
            List<ReplyChunk.BlockStatus> chunks = client.blockStatus(offset, SIZE - offset, 0);
            assertThat(chunks).hasSize(1);
            long before = offset;
            for (BlockDescriptor d : chunks.getFirst().descriptors()) {
                long length = Math.min(d.length(), SIZE - offset);
                if ((d.status() & 1) != 0) {
                    assertThat(offset % GRANULARITY).as("dirty run start").isZero();
                    dirty.set((int) (offset / GRANULARITY), (int) ((offset + length + GRANULARITY - 1) / GRANULARITY));
                }
                offset += length;
            }
            assertThat(offset).as("block status makes progress").isGreaterThan(before);
        }
        return dirty;
    }

    /** {@link #control}, retried while the socket is not there yet: the NBD port may accept first. */
    private static <T> T controlWhenUp(Path socket, Function<ExportControlGrpc.ExportControlBlockingStub, T> call)
            throws Exception {
        for (int attempt = 0; ; attempt++) {
            try {
                return control(socket, call);
            } catch (StatusRuntimeException e) {
                if (attempt == 50 || e.getStatus().getCode() != Status.Code.UNAVAILABLE) {
                    throw e;
                }
                Thread.sleep(100);
            }
        }
    }

    /** One call to the server's control API on its unix socket, as {@code nbd-node ctl} makes it. */
    private static <T> T control(Path socket, Function<ExportControlGrpc.ExportControlBlockingStub, T> call)
            throws Exception {
        EpollEventLoopGroup group = new EpollEventLoopGroup(1);
        ManagedChannel channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toFile()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(group).usePlaintext().build();
        try {
            return call.apply(ExportControlGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS));
        } finally {
            channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS).await(5, TimeUnit.SECONDS);
        }
    }

    // ------------------------------------------------------------------ images

    /** Base content in three of every four 64 KiB runs, holes in the rest. */
    private static void fillBase(Path image, long[] initial) throws IOException {
        int run = 16;
        for (int first = 0; first < BLOCKS; first += run) {
            if ((first / run) % 4 != 3) {
                ScratchDir.writeAt(image, (long) first * BLOCK, content(BASE_SEED, first, run));
                Arrays.fill(initial, first, first + run, BASE_SEED);
            }
        }
    }

    /**
     * Gives the middle layer (16 KiB clusters) data and zero clusters of its own, through a
     * server over the base, so the top's reads fall through two kinds of layer.
     */
    private static void fillMiddle(Path middle, Path base, long[] initial) throws Exception {
        try (ServerProcess server = ServerProcess.nbdNode("--export", "m=" + middle + ",backing=" + base);
             NbdClient client = NbdClient.connect("127.0.0.1", server.port(), LIMIT)) {
            client.go("m");
            for (int k = 0; k < BLOCKS / 16; k++) {
                int first = k * 16;
                if (k % 5 == 1) {
                    // 7 blocks from block 2 of the run: partial 16 KiB clusters at both ends.
                    client.write((long) (first + 2) * BLOCK, content(MIDDLE_SEED, first + 2, 7), 0);
                    Arrays.fill(initial, first + 2, first + 9, MIDDLE_SEED);
                } else if (k % 7 == 3) {
                    Reply reply = client.call(CommandType.WRITE_ZEROES, 0, (long) first * BLOCK, 16 * BLOCK, null);
                    assertThat(reply.error()).isNull();
                    Arrays.fill(initial, first, first + 16, ZERO);
                }
            }
            client.flush();
            client.disconnect();
            assertThat(server.terminate(LIMIT)).isZero();
        }
    }

    // ------------------------------------------------------------------ content

    /** {@code count} blocks of content {@code seed} starting at block {@code first}. */
    static byte[] content(long seed, int first, int count) {
        byte[] data = new byte[count * BLOCK];
        if (seed != ZERO) {
            for (int i = 0; i < count; i++) {
                fill(data, i * BLOCK, seed, first + i);
            }
        }
        return data;
    }

    private static void fill(byte[] data, int offset, long seed, int block) {
        ByteBuffer b = ByteBuffer.wrap(data, offset, BLOCK);
        b.putLong(seed).putLong(block ^ TAG);
        long x = seed * 0x9E3779B97F4A7C15L + block * 0xC2B2AE3D27D4EB4FL;
        while (b.hasRemaining()) {
            x += 0x9E3779B97F4A7C15L;
            long z = x;
            z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
            z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
            b.putLong(z ^ (z >>> 31));
        }
    }

    /** The content id of the block at {@code offset} of {@code data}, or {@link #UNKNOWN}. */
    static long identify(byte[] data, int offset, int block) {
        boolean zero = true;
        for (int i = offset; i < offset + BLOCK && zero; i++) {
            zero = data[i] == 0;
        }
        if (zero) {
            return ZERO;
        }
        ByteBuffer b = ByteBuffer.wrap(data, offset, BLOCK);
        long seed = b.getLong();
        if (seed <= 0 || (b.getLong() ^ TAG) != block) {
            return UNKNOWN;
        }
        byte[] expected = new byte[BLOCK];
        fill(expected, 0, seed, block);
        return Arrays.equals(data, offset, offset + BLOCK, expected, 0, BLOCK) ? seed : UNKNOWN;
    }

    private static String describe(long content) {
        if (content == ZERO) {
            return "zero";
        } else if (content == TRIMMED) {
            return "trim";
        } else if (content == UNKNOWN) {
            return "UNRECOGNISED (torn or foreign bytes)";
        } else if (content == BASE_SEED) {
            return "base";
        } else if (content == MIDDLE_SEED) {
            return "middle";
        }
        return "seed " + content;
    }

    private static String tail(String log) {
        List<String> lines = log.lines().toList();
        return String.join("\n", lines.subList(Math.max(0, lines.size() - 40), lines.size()));
    }

    // ------------------------------------------------------------------ the model

    /** One request's effect on one block. */
    private static final class Version {
        final long content;
        final String op;
        /** The acknowledgement's place in the order of all acknowledgements; -1 while none arrived. */
        long ack = -1;
        boolean fua;

        Version(long content, String op) {
            this.content = content;
            this.op = op;
        }

        @Override
        public String toString() {
            if (op.equals("found")) {
                return "found:" + describe(content);
            }
            return op + ":" + describe(content) + (ack < 0 ? "(unacked)" : fua ? "(FUA#" + ack + ")" : "(ack#" + ack + ")");
        }
    }

    /** Every block's versions since the last check, and what the bitmap must have recorded. */
    private static final class Model {
        private final List<List<Version>> history = new ArrayList<>(BLOCKS);
        private final BitSet inFlight = new BitSet(BLOCKS);
        /** Granules some request was sent for / acknowledged for since the bitmap was last cleared. */
        private final BitSet sentGranules = new BitSet(GRANULES);
        private final BitSet ackedGranules = new BitSet(GRANULES);
        private final AtomicLong acks = new AtomicLong();
        /** Every acknowledgement up to this one is covered by a completed FLUSH. */
        private long flushedUpTo = 0;

        Model(long[] initial) {
            for (int b = 0; b < BLOCKS; b++) {
                history.add(new ArrayList<>());
            }
            rebase(initial);
        }

        synchronized void rebase(long[] found) {
            for (int b = 0; b < BLOCKS; b++) {
                List<Version> versions = history.get(b);
                versions.clear();
                Version base = new Version(found[b], "found");
                base.ack = 0;
                base.fua = true;
                versions.add(base);
            }
            inFlight.clear();
        }

        synchronized void bitmapCleared() {
            sentGranules.clear();
            ackedGranules.clear();
        }

        /** Reserves blocks {@code [first, first+count)} and records the request's versions; null if busy. */
        synchronized Version[] send(int first, int count, long content, String op) {
            if (inFlight.nextSetBit(first) >= 0 && inFlight.nextSetBit(first) < first + count) {
                return null;
            }
            inFlight.set(first, first + count);
            Version[] versions = new Version[count];
            for (int i = 0; i < count; i++) {
                versions[i] = new Version(content, op);
                history.get(first + i).add(versions[i]);
            }
            sentGranules.set(granule(first), granule(first + count - 1) + 1);
            return versions;
        }

        synchronized void acknowledged(int first, Version[] versions, boolean fua) {
            long ack = acks.incrementAndGet();
            for (Version v : versions) {
                v.ack = ack;
                v.fua = fua;
            }
            inFlight.clear(first, first + versions.length);
            ackedGranules.set(granule(first), granule(first + versions.length - 1) + 1);
        }

        synchronized void failed(int first, int count) {
            inFlight.clear(first, first + count);
        }

        /** What a FLUSH sent now will cover once its reply arrives. */
        long flushCovers() {
            return acks.get();
        }

        synchronized void flushed(long covers) {
            flushedUpTo = Math.max(flushedUpTo, covers);
        }

        private boolean durable(Version v, boolean everyAck) {
            return v.ack >= 0 && (v.fua || everyAck || v.ack <= flushedUpTo);
        }

        /** The contents a version allows: its own, and for a TRIM also whatever the one before allowed. */
        private static void allowed(List<Version> versions, int i, Set<Long> into) {
            for (; i >= 0; i--) {
                Version v = versions.get(i);
                if (v.content != TRIMMED) {
                    into.add(v.content);
                    return;
                }
                into.add(ZERO);
            }
        }

        synchronized List<String> check(long[] found, boolean everyAck, Stats stats) {
            List<String> violations = new ArrayList<>();
            for (int b = 0; b < BLOCKS; b++) {
                List<Version> versions = history.get(b);
                int durable = 0;
                int lastAcked = 0;
                for (int i = 0; i < versions.size(); i++) {
                    if (durable(versions.get(i), everyAck)) {
                        durable = i;
                    }
                    if (versions.get(i).ack >= 0) {
                        lastAcked = i;
                    }
                }
                Set<Long> allowed = new LinkedHashSet<>();
                for (int i = durable; i < versions.size(); i++) {
                    allowed(versions, i, allowed);
                }
                stats.blocksChecked++;
                if (durable > 0) {
                    stats.durableBlocksChecked++;
                }
                if (!allowed.contains(found[b])) {
                    violations.add("block " + b + " (offset " + (long) b * BLOCK + "): found " + describe(found[b])
                            + ", allowed " + allowed.stream().map(CrashConsistencyIT::describe).toList()
                            + "; versions (durable from #" + durable + ", flushed up to ack#" + flushedUpTo + "): "
                            + versions);
                    continue;
                }
                Set<Long> fromLastAcked = new LinkedHashSet<>();
                for (int i = lastAcked; i < versions.size(); i++) {
                    allowed(versions, i, fromLastAcked);
                }
                if (!fromLastAcked.contains(found[b])) {
                    stats.ackedButUnflushedLost++;
                }
                if (versions.size() > 1 && found[b] == versions.getLast().content && versions.getLast().ack < 0) {
                    stats.unackedLanded++;
                }
            }
            return violations;
        }

        /** Null when {@code dirty} covers every acknowledged request and only requests that were sent. */
        synchronized String bitmapProblem(BitSet dirty) {
            BitSet missing = (BitSet) ackedGranules.clone();
            missing.andNot(dirty);
            BitSet extra = (BitSet) dirty.clone();
            extra.andNot(sentGranules);
            if (missing.isEmpty() && extra.isEmpty()) {
                return null;
            }
            return "clean granules (64 KiB) that acknowledged requests wrote: " + summary(missing)
                    + "; dirty granules nothing was sent to: " + summary(extra)
                    + " (" + dirty.cardinality() + " dirty, " + ackedGranules.cardinality() + " acknowledged, "
                    + sentGranules.cardinality() + " sent)";
        }

        private static String summary(BitSet set) {
            return set.cardinality() + " " + set.stream().limit(10).boxed().toList();
        }

        private static int granule(int block) {
            return (int) ((long) block * BLOCK / GRANULARITY);
        }
    }

    // ------------------------------------------------------------------ writers

    /** One request in flight: what to tell the model when its reply arrives. */
    private record Pending(int type, int first, Version[] versions, boolean fua, long flushCovers) {}

    /** The connections, each with a thread sending random requests and one receiving the replies. */
    private static final class Writers {
        private final int port;
        private final Model model;
        private final Stats stats;
        private final long seed;
        private final List<NbdClient> clients = new ArrayList<>();
        private final List<Thread> threads = new ArrayList<>();
        private final AtomicLong errors = new AtomicLong();
        private final AtomicLong shutdownErrors = new AtomicLong();
        private final AtomicLong nextSeed;
        private volatile boolean stop;
        /** Killed by the receiver that gets the next promise (FUA or FLUSH reply), once armed. */
        private final Process killOnPromise;
        private volatile boolean armed;
        private final java.util.concurrent.atomic.AtomicBoolean killed = new java.util.concurrent.atomic.AtomicBoolean();

        Writers(int port, Model model, Stats stats, long seed, Process killOnPromise) {
            this.killOnPromise = killOnPromise;
            this.port = port;
            this.model = model;
            this.stats = stats;
            this.seed = seed;
            this.nextSeed = stats.seeds;
        }

        void start() throws IOException {
            SplittableRandom random = new SplittableRandom(seed);
            for (int c = 0; c < CONNECTIONS; c++) {
                NbdClient client = NbdClient.connect("127.0.0.1", port, LIMIT);
                clients.add(client);
                client.negotiateStructuredReplies();
                int flags = client.go(EXPORT).flags();
                for (int flag : new int[] {TransmissionFlags.CAN_MULTI_CONN, TransmissionFlags.SEND_FUA,
                        TransmissionFlags.SEND_FLUSH, TransmissionFlags.SEND_TRIM, TransmissionFlags.SEND_WRITE_ZEROES}) {
                    assertThat(flags & flag).as("transmission flag " + flag).isNotZero();
                }
                Map<Long, Pending> pending = new ConcurrentHashMap<>();
                Semaphore slots = new Semaphore(IN_FLIGHT_PER_CONNECTION);
                SplittableRandom own = random.split();
                threads.add(Thread.ofPlatform().name("crash-send-" + c).start(() -> send(client, pending, slots, own)));
                threads.add(Thread.ofPlatform().name("crash-receive-" + c).start(() -> receive(client, pending, slots)));
            }
        }

        private void send(NbdClient client, Map<Long, Pending> pending, Semaphore slots, SplittableRandom random) {
            try {
                while (!stop) {
                    if (!slots.tryAcquire(20, TimeUnit.MILLISECONDS)) {
                        continue;
                    }
                    double r = random.nextDouble();
                    RequestHeader header;
                    byte[] payload = null;
                    Pending p;
                    if (r < 0.10) {
                        long covers = model.flushCovers();
                        header = new RequestHeader(0, CommandType.FLUSH, client.nextCookie(), 0, 0);
                        p = new Pending(CommandType.FLUSH, 0, null, false, covers);
                    } else {
                        int type = r < 0.70 ? CommandType.WRITE : r < 0.85 ? CommandType.WRITE_ZEROES : CommandType.TRIM;
                        boolean fua = random.nextInt(4) == 0;
                        int count;
                        int first;
                        Version[] versions = null;
                        long content = type == CommandType.WRITE ? nextSeed.getAndIncrement()
                                : type == CommandType.TRIM ? TRIMMED : ZERO;
                        String op = (type == CommandType.WRITE ? "W" : type == CommandType.TRIM ? "T" : "Z");
                        do {
                            int size = random.nextInt(10);
                            count = size < 6 ? 1 : size < 9 ? 2 + random.nextInt(15) : 17 + random.nextInt(32);
                            if (type != CommandType.WRITE && random.nextBoolean()) {
                                count = 16 * (1 + random.nextInt(3)); // whole 64 KiB clusters
                            }
                            int span = random.nextBoolean() ? HOT_BLOCKS : BLOCKS;
                            first = random.nextInt(span - count + 1);
                            if (count % 16 == 0 && type != CommandType.WRITE) {
                                first -= first % 16;
                            }
                            if (stop) {
                                return;
                            }
                            versions = model.send(first, count, content, op);
                        } while (versions == null);
                        int flags = fua ? CommandFlags.FUA : 0;
                        if (type == CommandType.WRITE) {
                            payload = content(content, first, count);
                        } else if (type == CommandType.WRITE_ZEROES && random.nextBoolean()) {
                            flags |= CommandFlags.NO_HOLE;
                        }
                        header = new RequestHeader(flags, type, client.nextCookie(), (long) first * BLOCK,
                                (long) count * BLOCK);
                        p = new Pending(type, first, versions, fua, 0);
                    }
                    pending.put(header.cookie(), p);
                    stats.sent.incrementAndGet();
                    client.send(header, payload);
                }
            } catch (IOException | InterruptedException e) {
                // The server is gone; whatever was sent stays possible.
            }
        }

        private void receive(NbdClient client, Map<Long, Pending> pending, Semaphore slots) {
            try {
                while (true) {
                    Reply reply = client.receive();
                    Pending p = pending.remove(reply.cookie());
                    if (p == null) {
                        errors.incrementAndGet();
                        System.out.println("reply for unknown cookie " + reply.cookie());
                        continue;
                    }
                    if (reply.error() == NbdError.ESHUTDOWN) {
                        shutdownErrors.incrementAndGet();
                        if (p.versions() != null) {
                            model.failed(p.first(), p.versions().length);
                        }
                    } else if (reply.error() != null) {
                        errors.incrementAndGet();
                        System.out.println("error reply " + reply.error() + " to request type " + p.type()
                                + " at block " + p.first() + ": " + reply.chunks());
                        if (p.versions() != null) {
                            model.failed(p.first(), p.versions().length);
                        }
                    } else if (p.type() == CommandType.FLUSH) {
                        model.flushed(p.flushCovers());
                        stats.flushesCompleted.incrementAndGet();
                        promised();
                    } else {
                        model.acknowledged(p.first(), p.versions(), p.fua());
                        stats.acked.incrementAndGet();
                        if (p.fua()) {
                            promised();
                        }
                    }
                    slots.release();
                }
            } catch (IOException e) {
                // EOF or reset: the server was killed or stopped.
            }
        }

        void killOnNextPromise() {
            armed = true;
        }

        private void promised() {
            if (armed && killed.compareAndSet(false, true)) {
                killOnPromise.destroyForcibly();
            }
        }

        long errors() {
            return errors.get();
        }

        long shutdownErrors() {
            return shutdownErrors.get();
        }

        /** Stops sending, closes the sockets once the server is gone, and waits for every thread. */
        void stopAndJoin() throws Exception {
            stop = true;
            for (Thread t : threads) {
                if (t.getName().startsWith("crash-send")) {
                    t.join(10_000);
                }
            }
            // Receivers end on EOF when the server is gone; closing the sockets ends them in any case.
            for (Thread t : threads) {
                t.join(10_000);
            }
            for (NbdClient client : clients) {
                client.close();
            }
            for (Thread t : threads) {
                t.join(10_000);
                assertThat(t.isAlive()).as(t.getName() + " ended").isFalse();
            }
        }
    }

    private static final class Stats {
        final String config;
        final AtomicLong sent = new AtomicLong();
        final AtomicLong acked = new AtomicLong();
        final AtomicLong seeds = new AtomicLong(16);
        final AtomicLong flushesCompleted = new AtomicLong();
        int kills;
        int cleanStops;
        long shutdownErrors;
        int pinnedCycles;
        int killsOnReply;
        long blocksChecked;
        long durableBlocksChecked;
        long ackedButUnflushedLost;
        long unackedLanded;
        int bitmapsInconsistent;
        int bitmapsExact;
        double seconds;
        double restartSeconds;
        double checkSeconds;

        Stats(String config) {
            this.config = config;
        }

        @Override
        public String toString() {
            return String.format("CrashConsistencyIT %s: %d kills + %d clean stops (%d on one CPU, %d kills right on a FUA/FLUSH reply) in %.1f s; requests sent %d, "
                            + "acknowledged %d (+%d FLUSH); blocks checked %d (%d pinned by FLUSH/FUA); "
                            + "acknowledged-unflushed writes lost %d, unacknowledged landed %d; ESHUTDOWN replies "
                            + "%d; bitmaps inconsistent %d, exact %d (%.1f s restarting, %.1f s checking)",
                    config, kills, cleanStops, pinnedCycles, killsOnReply, seconds, sent.get(), acked.get(), flushesCompleted.get(), blocksChecked,
                    durableBlocksChecked, ackedButUnflushedLost, unackedLanded, shutdownErrors,
                    bitmapsInconsistent, bitmapsExact, restartSeconds, checkSeconds);
        }
    }
}
