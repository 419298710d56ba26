package io.kubenbd.node.server;

import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static io.kubenbd.node.testing.NbdNodeJar.jar;
import static io.kubenbd.node.testing.NbdNodeJar.java;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * A copy-on-write top layer over a raw golden image, served by nbd-node, against qemu-nbd -A
 * serving a qcow2 over an identical base: after the same writes both must read the same and
 * report the same qemu:allocation-depth and base:allocation maps.
 */
class BackingChainIT {
    private static final Duration LIMIT = Duration.ofSeconds(60);
    private static final long SIZE = 8L << 20;

    private ScratchDir scratch;

    @BeforeEach
    void createScratch() throws Exception {
        scratch = ScratchDir.create("kube-nbd-chain-");
    }

    @AfterEach
    void deleteScratch() throws Exception {
        scratch.close();
    }

    @Test
    void aTopLayerOverAGoldenImageMatchesQemusQcow2Chain() throws Exception {
        PeerCommand.requireInstalled("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo");
        Path goldenForUs = golden("golden-ours.raw");
        Path goldenForQemu = golden("golden-qemu.raw");
        Path top = scratch.resolve("top.img");
        run(java(), "-jar", jar(), "image", "create", "--size", "8M", top.toString());
        Path qcow2 = scratch.resolve("top.qcow2");
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", goldenForQemu.toString(), "-F", "raw", qcow2.toString());

        List<String> writes = List.of("write -P 0x11 1M 64k", "write -P 0x22 2M 4k", "write -z 4M 64k",
                "discard 6M 128k", "write -P 0x33 7340000 5000");
        try (ServerProcess node = ServerProcess.nbdNode("--export", "vm=" + top + ",backing=" + goldenForUs);
             ServerProcess qemu = ServerProcess.qemuNbd("vm", qcow2, "-f", "qcow2", "-A", "--discard=unmap")) {
            qemuIo(node.uri("vm"), writes);
            qemuIo(qemu.uri("vm"), writes);

            assertThat(map(node, "qemu:allocation-depth")).as("allocation depth")
                    .isEqualTo(map(qemu, "qemu:allocation-depth"))
                    .anyMatch(line -> line.contains("local")).anyMatch(line -> line.contains("backing depth 2"));
            assertThat(map(node, "base:allocation")).as("base:allocation").isEqualTo(map(qemu, "base:allocation"));
            run("qemu-img", "compare", "-f", "raw", "-F", "raw", node.uri("vm"), qemu.uri("vm"));
        }
        assertThat(Files.readAllBytes(goldenForUs)).as("the golden image is never written")
                .isEqualTo(Files.readAllBytes(goldenForQemu));
    }

    @Test
    void imageCreateRefusesToOverwrite() throws Exception {
        Path existing = scratch.sparseFile("exists.img", 4096);
        PeerCommand.Result result = PeerCommand.run(LIMIT, java(), "-jar", jar(), "image", "create", "--size", "1M",
                existing.toString());
        assertThat(result.exitCode()).isEqualTo(1);
        assertThat(result.stderr()).contains("already exists");
        assertThat(Files.size(existing)).isEqualTo(4096);
    }

    /** A raw base with data at 0, 1 MiB and 3 MiB and holes elsewhere, the same bytes every call. */
    private Path golden(String name) throws Exception {
        Path base = scratch.sparseFile(name, SIZE);
        for (long offset : new long[] {0, 1 << 20, 3 << 20}) {
            byte[] data = new byte[128 * 1024];
            java.util.Arrays.fill(data, (byte) (0x40 + offset / (1 << 20)));
            ScratchDir.writeAt(base, offset, data);
        }
        return base;
    }

    private static List<String> map(ServerProcess server, String context) throws Exception {
        return run("nbdinfo", "--map=" + context, server.uri("vm")).stdout().lines().map(String::strip).toList();
    }

    private static void qemuIo(String uri, List<String> commands) throws Exception {
        List<String> command = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        commands.forEach(c -> command.addAll(List.of("-c", c)));
        command.add(uri);
        PeerCommand.Result result = PeerCommand.run(LIMIT, command).assertSuccess();
        assertThat(result.stdout() + result.stderr()).doesNotContain("failed");
    }

    private static PeerCommand.Result run(String... command) throws Exception {
        return PeerCommand.run(LIMIT, command).assertSuccess();
    }


}
