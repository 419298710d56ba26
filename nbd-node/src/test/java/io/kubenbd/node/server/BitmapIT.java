package io.kubenbd.node.server;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.ReplyChunk;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static io.kubenbd.node.testing.NbdNodeJar.jar;
import static io.kubenbd.node.testing.NbdNodeJar.java;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * Dirty bitmaps as backup tools use them: the same answers as qemu-nbd -B, the block-status
 * payload form over several contexts, persistence across restarts and crashes, and an
 * incremental backup driven through the control API.
 */
class BitmapIT {
    private static final Duration LIMIT = Duration.ofSeconds(60);
    private static final long SIZE = 8L << 20;
    private static final List<String> WRITES = List.of("write -P 1 1M 4k", "write -P 2 3M 200k");

    private ScratchDir scratch;

    @BeforeEach
    void createScratch() throws Exception {
        scratch = ScratchDir.create("kube-nbd-bitmap-");
    }

    @AfterEach
    void deleteScratch() throws Exception {
        scratch.close();
    }

    /** The whole qemu namespace at once: a top layer with a bitmap over a golden image, as a qcow2 chain. */
    @Test
    void bitmapDepthAndAllocationMatchQemuNbdOnTheSameChain() throws Exception {
        PeerCommand.requireInstalled("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo");
        Path goldenOurs = golden("golden-ours.raw");
        Path goldenQemu = golden("golden-qemu.raw");
        Path top = scratch.resolve("top.img");
        run(java(), "-jar", jar(), "image", "create", "--size", "8M", top.toString());
        Path qcow2 = scratch.resolve("top.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", goldenQemu.toString(), "-F", "raw", qcow2.toString());
        run("qemu-img", "bitmap", "--add", qcow2.toString(), "b1");
        qemuIo("--image-opts", "driver=qcow2,file.filename=" + qcow2);

        try (ServerProcess node = ServerProcess.nbdNode("--export", "v=" + top + ",backing=" + goldenOurs + ",bitmap=b1")) {
            qemuIo("-f", "raw", node.uri("v"));
            // qemu-nbd exports an enabled bitmap only read-only.
            try (ServerProcess qemu = ServerProcess.qemuNbd("v", qcow2, "-f", "qcow2", "-r", "-A", "-B", "b1")) {
                for (String context : List.of("qemu:dirty-bitmap:b1", "qemu:allocation-depth", "base:allocation")) {
                    assertThat(nbdinfoMap(node, context)).as(context).isEqualTo(nbdinfoMap(qemu, context));
                }
                assertThat(nbdinfoMap(node, "qemu:dirty-bitmap:b1")).anyMatch(line -> line.endsWith("dirty"));
                assertThat(nbdinfoMap(node, "qemu:allocation-depth")).anyMatch(line -> line.endsWith("backing depth 2"));
                assertThat(qemuImgMap(node)).isEqualTo(qemuImgMap(qemu));
                assertThat(contextLines(node)).isEqualTo(contextLines(qemu))
                        .contains("   qemu:dirty-bitmap:b1", "   qemu:allocation-depth", "   base:allocation");
                run("qemu-img", "compare", "-f", "raw", "-F", "raw", node.uri("v"), qemu.uri("v"));
            }
        }
    }

    private Path golden(String name) throws Exception {
        Path base = scratch.sparseFile(name, SIZE);
        byte[] data = new byte[256 * 1024];
        java.util.Arrays.fill(data, (byte) 0x5a);
        ScratchDir.writeAt(base, 2 << 20, data);
        return base;
    }

    private static List<String> nbdinfoMap(ServerProcess server, String context) throws Exception {
        return run("nbdinfo", "--map=" + context, server.uri("v")).stdout().lines().toList();
    }



    @Test
    void aBlockStatusPayloadReturnsExactlyTheRequestedContexts() throws Exception {
        Path image = scratch.sparseFile("disk.img", SIZE);
        try (ServerProcess node = ServerProcess.nbdNode("--export", "v=" + image + ",bitmap=b1");
             NbdClient client = NbdClient.connect("127.0.0.1", node.port(), LIMIT)) {
            assertThat(client.negotiateExtendedHeaders()).isTrue();
            List<OptionReply.MetaContext> selected = client.setMetaContexts("v",
                    List.of("base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b1"));
            assertThat(selected).extracting(OptionReply.MetaContext::id).containsExactly(0, 1, 2);
            client.go("v");
            client.write(1 << 20, new byte[4096], 0);

            assertThat(contextIds(client, null)).containsExactlyInAnyOrder(0, 1, 2);
            assertThat(contextIds(client, new int[] {2, 1})).containsExactlyInAnyOrder(1, 2);
            assertThat(contextIds(client, new int[] {2})).containsExactly(2);
            assertThat(contextIds(client, new int[] {0})).containsExactly(0);
        }
    }

    @Test
    void aBitmapSurvivesARestartAndAKilledServerMarksItInconsistent() throws Exception {
        Path image = scratch.sparseFile("disk.img", SIZE);
        Path socket = scratch.resolve("control.sock");
        String[] args = {"--control", "unix:" + socket, "--export", "v=" + image + ",bitmap=b1"};
        try (ServerProcess node = ServerProcess.nbdNode(args)) {
            qemuIo("-f", "raw", node.uri("v"));
            assertThat(node.terminate(LIMIT)).isZero();
        }
        try (ServerProcess node = ServerProcess.nbdNode(args)) {
            assertThat(dirtyLines(node)).as("kept across a clean restart").hasSize(2);
            node.process().destroyForcibly().waitFor();
        }
        try (ServerProcess node = ServerProcess.nbdNode(args)) {
            assertThat(ctl(socket, "exports").stdout()).contains("bitmap b1", "inconsistent", "did not shut down cleanly");
            assertThat(node.log()).contains("export=v bitmap b1 is inconsistent and not offered", "did not shut down cleanly");
            assertThat(run("nbdinfo", "--list", "nbd://127.0.0.1:" + node.port()).stdout())
                    .as("an inconsistent bitmap is not offered").doesNotContain("qemu:dirty-bitmap:b1");
            assertThat(node.log()).doesNotContain("Exception");

            assertThat(ctl(socket, "bitmap", "clear", "v", "b1").stdout()).contains("recording", "0 dirty bytes");
            assertThat(run("nbdinfo", "--map=qemu:dirty-bitmap:b1", node.uri("v")).stdout()).contains("clean")
                    .doesNotContain("dirty");
        }
    }

    /**
     * The backup cycle a tool runs: full copy, clear, writes, copy only the dirty extents,
     * clear, more writes: the second increment holds only the new writes.
     */
    @Test
    void incrementalBackupCopiesOnlyWhatChanged() throws Exception {
        PeerCommand.requireInstalled("qemu-img", "qemu-io", "nbdcopy", "nbdinfo");
        Path image = scratch.sparseFile("disk.img", SIZE);
        Path socket = scratch.resolve("control.sock");
        try (ServerProcess node = ServerProcess.nbdNode("--control", "unix:" + socket,
                "--export", "v=" + image + ",bitmap=backup")) {
            String uri = node.uri("v");
            run("qemu-io", "-f", "raw", "-c", "write -P 0x10 0 2M", uri);
            Path backup = scratch.resolve("backup.img");
            run("nbdcopy", uri, backup.toString());
            ctl(socket, "bitmap", "clear", "v", "backup");

            run("qemu-io", "-f", "raw", "-c", "write -P 0x21 512k 64k", "-c", "write -P 0x22 5M 8k", uri);
            List<long[]> first = dirtyExtents(node);
            assertThat(first).containsExactly(new long[] {512 << 10, 64 << 10}, new long[] {5 << 20, 64 << 10});
            copyExtents(uri, backup, first);
            assertThat(Files.mismatch(backup, image)).as("full backup + increment 1 = the disk").isEqualTo(-1L);

            ctl(socket, "bitmap", "clear", "v", "backup");
            run("qemu-io", "-f", "raw", "-c", "write -P 0x33 7M 4k", uri);
            List<long[]> second = dirtyExtents(node);
            assertThat(second).as("the second increment holds only the new write")
                    .containsExactly(new long[] {7 << 20, 64 << 10});
            copyExtents(uri, backup, second);
            assertThat(Files.mismatch(backup, image)).isEqualTo(-1L);
            assertThat(ctl(socket, "stats", "v").stdout()).contains("bytes written");
        }
    }

    @Test
    void aBlockDeviceKeepsItsBitmapsInTheStateDirectory() throws Exception {
        PeerCommand.requireInstalled("losetup", "nbdinfo", "qemu-io");
        Path backingFile = scratch.sparseFile("loop.img", SIZE);
        String device = run("losetup", "--find", "--show", backingFile.toString()).stdout().strip();
        try {
            Path state = scratch.resolve("state");
            String[] args = {"--state-dir", state.toString(), "--export", "v=" + device + ",bitmap=b1"};
            try (ServerProcess node = ServerProcess.nbdNode(args)) {
                qemuIo("-f", "raw", node.uri("v"));
                assertThat(dirtyLines(node)).hasSize(2);
                assertThat(node.terminate(LIMIT)).isZero();
            }
            assertThat(state.resolve("export-v.bitmaps").resolve("b1.bitmap")).isRegularFile();
            assertThat(Path.of(device + ".bitmaps")).doesNotExist();
            try (ServerProcess node = ServerProcess.nbdNode(args)) {
                assertThat(dirtyLines(node)).as("kept across a restart").hasSize(2);
            }
        } finally {
            PeerCommand.run(LIMIT, "losetup", "-d", device);
        }
    }

    // ------------------------------------------------------------------ helpers

    private static List<Integer> contextIds(NbdClient client, int[] ids) throws Exception {
        Reply reply;
        if (ids == null) {
            reply = client.call(CommandType.BLOCK_STATUS, 0, 0, SIZE, null);
        } else {
            ByteBuffer payload = ByteBuffer.allocate(8 + 4 * ids.length).putLong(SIZE);
            for (int id : ids) {
                payload.putInt(id);
            }
            reply = client.call(CommandType.BLOCK_STATUS, CommandFlags.PAYLOAD_LEN, 0, payload.capacity(), payload.array());
        }
        assertThat(reply.error()).isNull();
        return reply.chunks().stream().map(c -> ((ReplyChunk.BlockStatus) c).contextId()).toList();
    }

    private static List<String> dirtyLines(ServerProcess node) throws Exception {
        return run("nbdinfo", "--map=qemu:dirty-bitmap:b1", node.uri("v")).stdout().lines()
                .filter(l -> l.endsWith("dirty")).toList();
    }

    /** (offset, length) of each dirty run, from nbdinfo's map of the bitmap. */
    private static List<long[]> dirtyExtents(ServerProcess node) throws Exception {
        Pattern line = Pattern.compile("^\\s*(\\d+)\\s+(\\d+)\\s+1\\s+dirty$");
        List<long[]> extents = new ArrayList<>();
        for (String l : run("nbdinfo", "--map=qemu:dirty-bitmap:backup", node.uri("v")).stdout().lines().toList()) {
            Matcher m = line.matcher(l);
            if (m.matches()) {
                extents.add(new long[] {Long.parseLong(m.group(1)), Long.parseLong(m.group(2))});
            }
        }
        return extents;
    }

    /** Copies each extent from the export into the backup file with qemu-img, nothing else. */
    private static void copyExtents(String uri, Path backup, List<long[]> extents) throws Exception {
        for (long[] e : extents) {
            String window = ",offset=" + e[0] + ",size=" + e[1];
            run("qemu-img", "convert", "-n", "--image-opts", "--target-image-opts",
                    "driver=raw" + window + ",file.driver=nbd,file.host=127.0.0.1,file.port="
                            + uri.replaceAll(".*:(\\d+)/.*", "$1") + ",file.export=v",
                    "driver=raw" + window + ",file.driver=file,file.filename=" + backup);
        }
    }

    private static List<String> qemuImgMap(ServerProcess server) throws Exception {
        return run("qemu-img", "map", "--output=json", "--image-opts", "driver=nbd,host=127.0.0.1,port=" + server.port()
                + ",export=v,x-dirty-bitmap=qemu:dirty-bitmap:b1").stdout().lines().toList();
    }

    private static List<String> contextLines(ServerProcess server) throws Exception {
        List<String> lines = run("qemu-nbd", "--list", "-b", "127.0.0.1", "-p", String.valueOf(server.port()))
                .stdout().lines().toList();
        int at = lines.indexOf(lines.stream().filter(l -> l.contains("available meta contexts")).findFirst().orElseThrow());
        return lines.subList(at, lines.size()).stream().filter(l -> l.startsWith("   ") || l.contains("contexts")).toList();
    }

    private static void qemuIo(String... target) throws Exception {
        List<String> command = new ArrayList<>(List.of("qemu-io"));
        WRITES.forEach(w -> command.addAll(List.of("-c", w)));
        command.addAll(List.of(target));
        PeerCommand.run(LIMIT, command).assertSuccess();
    }

    private static PeerCommand.Result ctl(Path socket, String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of(java(), "-jar", jar(), "ctl", "--control", "unix:" + socket));
        command.addAll(List.of(args));
        return PeerCommand.run(LIMIT, command).assertSuccess();
    }

    private static PeerCommand.Result run(String... command) throws Exception {
        return PeerCommand.run(LIMIT, command).assertSuccess();
    }
}
