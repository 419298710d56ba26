package io.kubenbd.node.storage;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Applies the same requests to a qcow2 chain (through qemu-io) and to ours, then compares
 * contents (qemu-img convert), allocation depth and zero/data status (qemu-img map) with
 * {@link LayeredBackend#read}, {@link LayeredBackend#depth} and {@link LayeredBackend#allocation}.
 * Both use 64 KiB clusters. Skipped without qemu-img and qemu-io.
 *
 * <p>Raw bases are a multiple of 512 bytes long: qemu rounds a raw file's size up to whole
 * sectors and reports the rounded tail as held by the base, which we do not.
 */
class LayeredBackendQemuIT {
    private static final int KIB = 1024;
    private static final int MIB = 1024 * KIB;
    private static final int CLUSTER = 64 * KIB;

    @TempDir
    Path dir;

    private record Op(String kind, long offset, long length, int pattern) {
        static Op write(long offset, long length, int pattern) {
            return new Op("write", offset, length, pattern);
        }

        static Op zero(long offset, long length) {
            return new Op("zero", offset, length, 0);
        }

        /** Whole clusters only: qcow2 ignores the partial clusters of a discard, we zero them. */
        static Op discard(long offset, long length) {
            return new Op("discard", offset, length, 0);
        }

        String qemuIo() {
            return switch (kind) {
                case "write" -> "write -P " + pattern + " " + offset + " " + length;
                case "zero" -> "write -z " + offset + " " + length;
                default -> "discard " + offset + " " + length;
            };
        }

        void apply(LayeredBackend backend) throws IOException {
            switch (kind) {
                case "write" -> {
                    byte[] bytes = new byte[(int) length];
                    Arrays.fill(bytes, (byte) pattern);
                    backend.write(offset, ByteBuffer.wrap(bytes));
                }
                // qemu-io's write -z without -u is NBD's NO_HOLE.
                case "zero" -> backend.writeZeroes(offset, length, false, false);
                default -> backend.trim(offset, length);
            }
        }
    }

    @BeforeAll
    static void requireQemu() {
        io.kubenbd.node.testing.PeerCommand.requireInstalled("qemu-img", "qemu-io");
    }

    @Test
    void topOverRawBaseMatchesQcow2() throws Exception {
        Path base = rawBase(2 * MIB + 3 * 512);
        Path qcow2 = dir.resolve("top.qcow2");
        HostCommand.run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                "-b", base.toString(), "-F", "raw", qcow2.toString(), String.valueOf(4 * MIB));
        Path ours = dir.resolve("top.img");
        OverlayImage.create(ours, 4 * MIB);
        List<Op> ops = List.of(
                Op.write(CLUSTER + 10, 10, 0x11),
                Op.zero(200_000, 300_000),
                Op.discard(MIB, 2 * CLUSTER),
                Op.write(3 * MIB, 2 * CLUSTER, 0x22),
                Op.write(2 * MIB - 100, 5000, 0x33),       // across the base's end
                Op.zero(3 * MIB + CLUSTER + 5, 50),
                Op.write(20 * CLUSTER - 1, CLUSTER + 2, 0x44));
        apply(qcow2, ours, List.of(base), ops);
        compare(qcow2, ours, List.of(base));
    }

    @Test
    void threeLayerChainMatchesQcow2() throws Exception {
        Path base = rawBase(3 * MIB);
        Path middleQcow2 = dir.resolve("middle.qcow2");
        HostCommand.run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                "-b", base.toString(), "-F", "raw", middleQcow2.toString(), String.valueOf(3 * MIB));
        Path middle = dir.resolve("middle.img");
        OverlayImage.create(middle, 3 * MIB);
        apply(middleQcow2, middle, List.of(base), List.of(
                Op.write(0, 3 * CLUSTER + 7, 0x55),
                Op.discard(5 * CLUSTER, 3 * CLUSTER),
                Op.zero(10 * CLUSTER + 1, 100),
                Op.write(MIB + 12345, 200_000, 0x66)));

        Path topQcow2 = dir.resolve("top.qcow2");
        HostCommand.run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                "-b", middleQcow2.toString(), "-F", "qcow2", topQcow2.toString(), String.valueOf(4 * MIB));
        Path top = dir.resolve("top.img");
        OverlayImage.create(top, 4 * MIB);
        apply(topQcow2, top, List.of(middle, base), List.of(
                Op.write(2 * CLUSTER + 1, 10, 0x77),
                Op.write(6 * CLUSTER, CLUSTER, 0x78),
                Op.zero(MIB, CLUSTER),
                Op.write(3 * MIB + 5, 10, 0x79)));
        compare(topQcow2, top, List.of(middle, base));
    }

    private void apply(Path qcow2, Path ours, List<Path> backing, List<Op> ops) throws Exception {
        List<String> command = new ArrayList<>(List.of("qemu-io", "-f", "qcow2"));
        for (Op op : ops) {
            command.add("-c");
            command.add(op.qemuIo());
        }
        command.add(qcow2.toString());
        HostCommand.run(command.toArray(String[]::new));
        try (LayeredBackend backend = LayeredBackend.open(ours, backing, false)) {
            for (Op op : ops) {
                op.apply(backend);
            }
        }
    }

    private void compare(Path qcow2, Path ours, List<Path> backing) throws Exception {
        Path converted = dir.resolve("converted.raw");
        Files.deleteIfExists(converted);
        HostCommand.run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", qcow2.toString(), converted.toString());
        JsonNode map = new ObjectMapper().readTree(
                HostCommand.run("qemu-img", "map", "--output=json", "-f", "qcow2", qcow2.toString()));
        List<DepthRun> qemuDepths = new ArrayList<>();
        List<Extent> qemuExtents = new ArrayList<>();
        for (JsonNode entry : map) {
            long length = entry.get("length").asLong();
            // qemu-img map counts depth from 0 at the top; qemu:allocation-depth from 1, with 0 for unallocated.
            int depth = entry.get("present").asBoolean() ? entry.get("depth").asInt() + 1 : 0;
            addDepth(qemuDepths, new DepthRun(length, depth));
            addExtent(qemuExtents, new Extent(length, !entry.get("data").asBoolean(), entry.get("zero").asBoolean()));
        }
        try (LayeredBackend backend = LayeredBackend.open(ours, backing, true)) {
            ByteBuffer content = ByteBuffer.allocate((int) backend.size());
            backend.read(0, content);
            assertThat(content.array()).isEqualTo(Files.readAllBytes(converted));
            assertThat(backend.depth(0, backend.size(), Integer.MAX_VALUE)).isEqualTo(qemuDepths);
            List<Extent> ourExtents = new ArrayList<>();
            for (Extent extent : backend.allocation(0, backend.size(), Integer.MAX_VALUE)) {
                addExtent(ourExtents, extent);
            }
            assertThat(ourExtents).isEqualTo(qemuExtents);
        }
    }

    private static void addDepth(List<DepthRun> runs, DepthRun run) {
        if (!runs.isEmpty() && runs.getLast().depth() == run.depth()) {
            runs.set(runs.size() - 1, new DepthRun(runs.getLast().length() + run.length(), run.depth()));
        } else {
            runs.add(run);
        }
    }

    private static void addExtent(List<Extent> extents, Extent extent) {
        if (!extents.isEmpty() && extents.getLast().hole() == extent.hole() && extents.getLast().zero() == extent.zero()) {
            Extent last = extents.getLast();
            extents.set(extents.size() - 1, new Extent(last.length() + extent.length(), last.hole(), last.zero()));
        } else {
            extents.add(extent);
        }
    }

    private Path rawBase(int size) throws IOException {
        Path base = dir.resolve("base.raw");
        Files.write(base, LayeredBackendTest.pattern(size));
        return base;
    }
}
