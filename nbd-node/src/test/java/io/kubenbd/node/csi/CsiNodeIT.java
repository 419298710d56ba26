package io.kubenbd.node.csi;

import io.kubenbd.node.csi.v1.NodeExpandVolumeRequest;
import io.kubenbd.node.csi.v1.NodeGetVolumeStatsRequest;
import io.kubenbd.node.csi.v1.NodePublishVolumeRequest;
import io.kubenbd.node.csi.v1.NodeStageVolumeRequest;
import io.kubenbd.node.csi.v1.NodeUnpublishVolumeRequest;
import io.kubenbd.node.csi.v1.NodeUnstageVolumeRequest;
import io.kubenbd.node.csi.v1.VolumeCapability;
import io.kubenbd.node.csi.v1.VolumeUsage;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import org.assertj.core.api.ThrowableAssert.ThrowingCallable;
import org.junit.jupiter.api.Test;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The node plugin end to end through the userspace path (FUSE + loop device), as kubelet drives
 * it, against a real {@code nbd-node serve} with TLS-PSK: the bytes a pod writes must end up in
 * the server's image, survive unstage and stage, a server restart mid-use and a plugin crash.
 */
class CsiNodeIT {
    private static final long SIZE = 128L << 20;

    private static VolumeCapability mount(String fsType) {
        return VolumeCapability.newBuilder()
                .setMount(VolumeCapability.MountVolume.newBuilder().setFsType(fsType))
                .setAccessMode(VolumeCapability.AccessMode.newBuilder().setMode(VolumeCapability.AccessMode.Mode.SINGLE_NODE_WRITER))
                .build();
    }

    private static VolumeCapability block() {
        return VolumeCapability.newBuilder()
                .setBlock(VolumeCapability.BlockVolume.getDefaultInstance())
                .setAccessMode(VolumeCapability.AccessMode.newBuilder().setMode(VolumeCapability.AccessMode.Mode.SINGLE_NODE_WRITER))
                .build();
    }

    /** The test's directory, image and PSK; closing it releases leftover mounts and loop devices, then deletes it. */
    private record Setup(ScratchDir dir, Path image, String psk) implements AutoCloseable {
        @Override
        public void close() throws Exception {
            try {
                NodeLeftovers.release(dir.path());
            } finally {
                dir.close();
            }
        }
    }

    private static Setup setup(String name) throws Exception {
        return setup(name, SIZE);
    }

    private static Setup setup(String name, long size) throws Exception {
        PeerCommand.requireInstalled("psktool", "losetup", "mkfs.ext4", "mkfs.xfs", "blkid", "debugfs");
        ScratchDir dir = ScratchDir.create(name);
        Path image = dir.resolve("volume.img");
        try (RandomAccessFile file = new RandomAccessFile(image.toFile(), "rw")) {
            file.setLength(size);
        }
        PeerCommand.run(Duration.ofSeconds(10), "psktool", "-u", "kube-nbd", "-p", dir.resolve("keys.psk").toString()).assertSuccess();
        return new Setup(dir, image, Files.readString(dir.resolve("keys.psk")));
    }

    private static ServerProcess serve(Setup setup) throws Exception {
        return ServerProcess.nbdNode("--export", "vol=" + setup.image(), "--tls", "require",
                "--tls-psk", setup.dir().resolve("keys.psk").toString());
    }

    private static NodeStageVolumeRequest stage(Setup setup, ServerProcess server, Path staging, VolumeCapability capability) {
        return NodeStageVolumeRequest.newBuilder().setVolumeId("ns/vol").setStagingTargetPath(staging.toString())
                .setVolumeCapability(capability)
                .putAllVolumeContext(Map.of("host", "127.0.0.1", "port", Integer.toString(server.port()),
                        "exportName", "vol", "connections", "2", "tlsMode", "psk"))
                .putSecrets("keys.psk", setup.psk())
                .build();
    }

    private static NodePublishVolumeRequest publish(Path staging, Path target, VolumeCapability capability) {
        return NodePublishVolumeRequest.newBuilder().setVolumeId("ns/vol").setStagingTargetPath(staging.toString())
                .setTargetPath(target.toString()).setVolumeCapability(capability).build();
    }

    private static NodeUnpublishVolumeRequest unpublish(Path target) {
        return NodeUnpublishVolumeRequest.newBuilder().setVolumeId("ns/vol").setTargetPath(target.toString()).build();
    }

    private static NodeUnstageVolumeRequest unstage(Path staging) {
        return NodeUnstageVolumeRequest.newBuilder().setVolumeId("ns/vol").setStagingTargetPath(staging.toString()).build();
    }

    /** A file read out of the ext4 image with debugfs, without mounting it. */
    private static String fileInImage(Path image, String path) throws Exception {
        var result = PeerCommand.run(Duration.ofSeconds(30), "debugfs", "-R", "cat " + path, image.toString());
        return result.stdout();
    }

    @Test
    void filesystemVolumeRoundTripsThroughTheServersImage() throws Exception {
        try (Setup setup = setup("csi-fs"); ServerProcess server = serve(setup);
             CsiPluginProcess plugin = CsiPluginProcess.start(setup.dir().path(), setup.dir().resolve("state"))) {
            ScratchDir dir = setup.dir();
            Path staging = dir.resolve("staging");
            Path target = dir.resolve("pod/volume");
            var node = plugin.node();
            if (!Files.exists(Path.of("/sys/module/nbd"))) {
                assertThat(plugin.log()).contains("attaches volumes through FUSE and loop devices");
            }
            node.nodeStageVolume(stage(setup, server, staging, mount("ext4")));
            node.nodeStageVolume(stage(setup, server, staging, mount("ext4"))); // idempotent
            assertThatThrownBy(() -> node.nodeStageVolume(stage(setup, server, dir.resolve("elsewhere"), mount("ext4"))))
                    .isInstanceOfSatisfying(StatusRuntimeException.class,
                            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.ALREADY_EXISTS));
            node.nodePublishVolume(publish(staging, target, mount("ext4")));
            node.nodePublishVolume(publish(staging, target, mount("ext4")));
            // Publish binds only from where the volume is staged; stats answer only for the volume's own paths.
            assertFails(Status.Code.INVALID_ARGUMENT,
                    () -> node.nodePublishVolume(publish(dir.resolve("other-staging"), dir.resolve("pod2/volume"), mount("ext4"))),
                    "is staged at " + staging);
            assertThat(dir.resolve("pod2/volume")).doesNotExist();
            assertFails(Status.Code.NOT_FOUND, () -> node.nodeGetVolumeStats(NodeGetVolumeStatsRequest.newBuilder()
                    .setVolumeId("ns/vol").setVolumePath(dir.path().toString()).build()), "is not at");
            Files.writeString(target.resolve("hello.txt"), "written through kube-nbd\n");
            Path readOnlyTarget = dir.resolve("reader/volume");
            node.nodePublishVolume(publish(staging, readOnlyTarget, mount("ext4")).toBuilder().setReadonly(true).build());
            assertThat(readOnlyTarget.resolve("hello.txt")).hasContent("written through kube-nbd");
            assertThatThrownBy(() -> Files.writeString(readOnlyTarget.resolve("other.txt"), "x"))
                    .hasMessageContaining("Read-only file system");
            node.nodeUnpublishVolume(unpublish(readOnlyTarget));
            var stats = node.nodeGetVolumeStats(NodeGetVolumeStatsRequest.newBuilder().setVolumeId("ns/vol")
                    .setVolumePath(target.toString()).build());
            assertThat(stats.getUsageList()).anySatisfy(u -> {
                assertThat(u.getUnit()).isEqualTo(VolumeUsage.Unit.BYTES);
                assertThat(u.getTotal()).isBetween(SIZE / 2, SIZE);
            });
            assertThat(stats.getVolumeCondition().getAbnormal()).isFalse();
            assertThat(Files.readString(dir.resolve("state/volumes").resolve(
                    Files.list(dir.resolve("state/volumes")).filter(p -> p.toString().endsWith(".psk")).findFirst().orElseThrow())))
                    .isEqualTo(setup.psk());
            assertThat(Files.getPosixFilePermissions(Files.list(dir.resolve("state/volumes"))
                    .filter(p -> p.toString().endsWith(".psk")).findFirst().orElseThrow()))
                    .containsExactlyInAnyOrder(java.nio.file.attribute.PosixFilePermission.OWNER_READ,
                            java.nio.file.attribute.PosixFilePermission.OWNER_WRITE);

            node.nodeUnpublishVolume(unpublish(target));
            node.nodeUnstageVolume(unstage(staging));
            node.nodeUnstageVolume(unstage(staging));
            assertThat(fileInImage(setup.image(), "/hello.txt")).isEqualTo("written through kube-nbd\n");
            assertThat(plugin.log()).doesNotContain(setup.psk().strip().split(":")[1]);

            // Staged again, the existing filesystem is mounted, not made anew.
            node.nodeStageVolume(stage(setup, server, staging, mount("ext4")));
            node.nodePublishVolume(publish(staging, target, mount("ext4")));
            assertThat(target.resolve("hello.txt")).hasContent("written through kube-nbd");

            // The server restarts while the volume is in use: I/O waits and resumes.
            server.terminate(Duration.ofSeconds(10));
            try (ServerProcess restarted = server.restart()) {
                Files.writeString(target.resolve("after-restart.txt"), "still here\n");
                PeerCommand.run(Duration.ofSeconds(60), "sync", "-f", target.resolve("after-restart.txt").toString()).assertSuccess();
                node.nodeUnpublishVolume(unpublish(target));
                node.nodeUnstageVolume(unstage(staging));
                assertThat(fileInImage(setup.image(), "/after-restart.txt")).isEqualTo("still here\n");
                assertThat(plugin.log()).contains("reconnected");
            }
        }
    }

    /** Nothing the plugin made for the test is left mounted or attached: no mount and no loop device under its directory. */
    private static void assertNothingAttached(Setup setup) throws Exception {
        assertThat(NodeLeftovers.mounts(setup.dir().path())).as("mounts under %s", setup.dir().path()).isEmpty();
        assertThat(NodeLeftovers.loopDevices(setup.dir().path())).as("loop devices on files under %s", setup.dir().path()).isEmpty();
    }

    private static String sha256(Path file) throws Exception {
        var digest = java.security.MessageDigest.getInstance("SHA-256");
        try (var in = Files.newInputStream(file)) {
            byte[] buffer = new byte[1 << 20];
            for (int n; (n = in.read(buffer)) > 0; ) {
                digest.update(buffer, 0, n);
            }
        }
        return java.util.HexFormat.of().formatHex(digest.digest());
    }

    /** A VM disk image (a partition table, no filesystem on the whole device) is never formatted for a Filesystem volume. */
    @Test
    void partitionedDiskIsNotFormatted() throws Exception {
        try (Setup setup = setup("csi-partitioned", 32L << 20)) {
            DiskSignatures.dosPartitionTable(setup.image());
            String before = sha256(setup.image());
            try (ServerProcess server = serve(setup);
                 CsiPluginProcess plugin = CsiPluginProcess.start(setup.dir().path(), setup.dir().resolve("state"))) {
                Path staging = setup.dir().resolve("staging");
                assertThatThrownBy(() -> plugin.node().nodeStageVolume(stage(setup, server, staging, mount("ext4"))))
                        .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                            assertThat(e.getStatus().getDescription())
                                    .contains("holds a dos partition table; consume it as a Block volume");
                        });
                assertNothingAttached(setup);
                // The same disk as a Block volume is what a VM needs, and works.
                plugin.node().nodeStageVolume(stage(setup, server, staging, block()));
                plugin.node().nodeUnstageVolume(unstage(staging));
            }
            assertThat(sha256(setup.image())).as("the image's bytes").isEqualTo(before);
            assertNothingAttached(setup);
        }
    }

    /**
     * Single-node read-write across nodes: node A stages and writes; node B (another source
     * address, as another node's plugin has) cannot stage the same volume while A holds it, and
     * A's data are intact; once A lets go, B stages it and finds them.
     */
    @Test
    void aSecondNodeCannotStageAVolumeHeldReadWriteElsewhere() throws Exception {
        try (Setup setup = setup("csi-two-nodes"); ServerProcess server = serve(setup)) {
            Path nodeA = Files.createDirectories(setup.dir().resolve("node-a"));
            Path nodeB = Files.createDirectories(setup.dir().resolve("node-b"));
            try (CsiPluginProcess a = CsiPluginProcess.start(nodeA, nodeA.resolve("state"), "--source-address", "127.0.0.1");
                 CsiPluginProcess b = CsiPluginProcess.start(nodeB, nodeB.resolve("state"), "--source-address", "127.0.0.2")) {
                Path stagingA = nodeA.resolve("staging");
                Path targetA = nodeA.resolve("pod/volume");
                a.node().nodeStageVolume(stage(setup, server, stagingA, mount("ext4")));
                a.node().nodePublishVolume(publish(stagingA, targetA, mount("ext4")));
                Files.writeString(targetA.resolve("owner.txt"), "node a\n");
                PeerCommand.run(Duration.ofSeconds(60), "sync", "-f", targetA.resolve("owner.txt").toString()).assertSuccess();

                Path stagingB = nodeB.resolve("staging");
                for (VolumeCapability capability : List.of(mount("ext4"), block())) {
                    assertFails(Status.Code.FAILED_PRECONDITION,
                            () -> b.node().nodeStageVolume(stage(setup, server, stagingB, capability)),
                            "in use read-write on another node", "127.0.0.1");
                }
                assertThat(NodeLeftovers.mounts(nodeB)).isEmpty();
                assertThat(NodeLeftovers.loopDevices(nodeB)).isEmpty();
                // A read-only consumer elsewhere (a backup reading the raw device) is not refused.
                VolumeCapability reader = block().toBuilder().setAccessMode(VolumeCapability.AccessMode.newBuilder()
                        .setMode(VolumeCapability.AccessMode.Mode.MULTI_NODE_READER_ONLY)).build();
                b.node().nodeStageVolume(stage(setup, server, stagingB, reader));
                b.node().nodeUnstageVolume(unstage(stagingB));

                Files.writeString(targetA.resolve("owner.txt"), "node a, still\n");
                assertThat(targetA.resolve("owner.txt")).hasContent("node a, still");
                a.node().nodeUnpublishVolume(unpublish(targetA));
                a.node().nodeUnstageVolume(unstage(stagingA));
                assertThat(PeerCommand.run(Duration.ofSeconds(60), "e2fsck", "-fn", setup.image().toString()).exitCode())
                        .as("e2fsck of the image after both nodes tried").isZero();

                Path targetB = nodeB.resolve("pod/volume");
                b.node().nodeStageVolume(stage(setup, server, stagingB, mount("ext4")));
                b.node().nodePublishVolume(publish(stagingB, targetB, mount("ext4")));
                assertThat(targetB.resolve("owner.txt")).hasContent("node a, still");
                b.node().nodeUnpublishVolume(unpublish(targetB));
                b.node().nodeUnstageVolume(unstage(stagingB));
            }
        }
    }

    /** The plugin runs in the test's directory, so a relative path would resolve inside it too. */
    private static List<String> badSpellings(Setup setup, Path path) {
        String relative = setup.dir().path().relativize(path).toString();
        return List.of(relative, setup.dir().path() + "/x/../" + relative, path + "/");
    }

    /** The call fails with {@code code}, and its description contains each of {@code fragments}. */
    private static void assertFails(Status.Code code, ThrowingCallable request, String... fragments) {
        assertThatThrownBy(request).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(code);
            assertThat(e.getStatus().getDescription()).contains(fragments);
        });
    }

    private static void assertInvalidArgument(String path, ThrowingCallable request) {
        assertFails(Status.Code.INVALID_ARGUMENT, request, "must be an absolute, normalised path", "got '" + path + "'");
    }

    /**
     * Relative paths, ".." segments and trailing slashes are refused by every call that takes a
     * path, before it acts: INVALID_ARGUMENT, except NodeGetVolumeStats' volume_path (NOT_FOUND).
     */
    @Test
    void pathsThatAreNotAbsoluteAndNormalisedAreRejected() throws Exception {
        try (Setup setup = setup("csi-paths", 32L << 20); ServerProcess server = serve(setup);
             CsiPluginProcess plugin = CsiPluginProcess.start(setup.dir().path(), setup.dir().resolve("state"))) {
            var node = plugin.node();
            Path staging = setup.dir().resolve("staging");
            Path target = setup.dir().resolve("pod/volume");
            for (String bad : badSpellings(setup, staging)) {
                assertInvalidArgument(bad, () -> node.nodeStageVolume(stage(setup, server, staging, mount("ext4"))
                        .toBuilder().setStagingTargetPath(bad).build()));
                assertNothingAttached(setup);
            }
            node.nodeStageVolume(stage(setup, server, staging, mount("ext4")));
            List<String> stagedMounts = NodeLeftovers.mounts(setup.dir().path());
            for (String bad : badSpellings(setup, target)) {
                assertInvalidArgument(bad, () -> node.nodePublishVolume(
                        publish(staging, target, mount("ext4")).toBuilder().setTargetPath(bad).build()));
                assertInvalidArgument(bad, () -> node.nodeUnpublishVolume(
                        unpublish(target).toBuilder().setTargetPath(bad).build()));
                // A path the volume is not at is NOT_FOUND for NodeGetVolumeStats (the spec; csi-sanity sends "some/path").
                assertFails(Status.Code.NOT_FOUND, () -> node.nodeGetVolumeStats(
                        NodeGetVolumeStatsRequest.newBuilder().setVolumeId("ns/vol").setVolumePath(bad).build()), "is not at '" + bad + "'");
                assertInvalidArgument(bad, () -> node.nodeExpandVolume(
                        NodeExpandVolumeRequest.newBuilder().setVolumeId("ns/vol").setVolumePath(bad).build()));
            }
            for (String bad : badSpellings(setup, staging)) {
                assertInvalidArgument(bad, () -> node.nodePublishVolume(
                        publish(staging, target, mount("ext4")).toBuilder().setStagingTargetPath(bad).build()));
                assertInvalidArgument(bad, () -> node.nodeGetVolumeStats(NodeGetVolumeStatsRequest
                        .newBuilder().setVolumeId("ns/vol").setVolumePath(staging.toString()).setStagingTargetPath(bad).build()));
                assertInvalidArgument(bad, () -> node.nodeExpandVolume(NodeExpandVolumeRequest
                        .newBuilder().setVolumeId("ns/vol").setVolumePath(staging.toString()).setStagingTargetPath(bad).build()));
                assertInvalidArgument(bad, () -> node.nodeUnstageVolume(
                        unstage(staging).toBuilder().setStagingTargetPath(bad).build()));
            }
            assertThat(NodeLeftovers.mounts(setup.dir().path())).as("nothing published, nothing unstaged").isEqualTo(stagedMounts);
            node.nodeUnstageVolume(unstage(staging));
            assertNothingAttached(setup);
        }
    }

    /**
     * After a restart whose re-attach failed, the recorded device and staging directory belong to
     * no live attachment: nothing is published from them until NodeStageVolume attached the volume again.
     */
    @Test
    void aVolumeWhoseReattachFailedIsPublishedOnlyAfterItIsStagedAgain() throws Exception {
        try (Setup setup = setup("csi-stale"); ServerProcess server = serve(setup)) {
            ScratchDir dir = setup.dir();
            Path staging = dir.resolve("staging");
            Path target = stagePublishWriteAndCrash(setup, server, staging);
            server.terminate(Duration.ofSeconds(10));
            try (CsiPluginProcess plugin = CsiPluginProcess.start(dir.path(), dir.resolve("state"))) {
                var node = plugin.node();
                assertThat(plugin.log()).contains("could not be re-attached after restart");
                Path newTarget = dir.resolve("pod2/volume");
                assertFails(Status.Code.FAILED_PRECONDITION, () -> node.nodePublishVolume(publish(staging, newTarget, mount("ext4"))),
                        "is not attached on this node");
                assertThat(NodeLeftovers.mounts(dir.path())).as("mounts").isEmpty();
                assertFails(Status.Code.UNAVAILABLE, () -> node.nodeStageVolume(stage(setup, server, staging, mount("ext4"))),
                        "cannot attach", "Connection refused");
                assertThat(NodeLeftovers.mounts(dir.path())).as("mounts").isEmpty();
                try (ServerProcess restarted = server.restart()) {
                    node.nodeStageVolume(stage(setup, restarted, staging, mount("ext4")));
                    node.nodePublishVolume(publish(staging, newTarget, mount("ext4")));
                    assertThat(newTarget.resolve("before.txt")).hasContent("before the crash");
                    node.nodeUnpublishVolume(unpublish(newTarget));
                    node.nodeUnpublishVolume(unpublish(target));
                    node.nodeUnstageVolume(unstage(staging));
                }
            }
            assertNothingAttached(setup);
            assertThat(dir.resolve("state/volumes")).isEmptyDirectory();
        }
    }

    /** Unstaging under a published target would leave its filesystem mounted on a device being detached. */
    @Test
    void unstageWhilePublishedFailsAndLeavesTheVolumeInUse() throws Exception {
        try (Setup setup = setup("csi-unstage-busy", 32L << 20); ServerProcess server = serve(setup);
             CsiPluginProcess plugin = CsiPluginProcess.start(setup.dir().path(), setup.dir().resolve("state"))) {
            var node = plugin.node();
            Path staging = setup.dir().resolve("staging");
            Path target = setup.dir().resolve("pod/volume");
            node.nodeStageVolume(stage(setup, server, staging, mount("ext4")));
            node.nodePublishVolume(publish(staging, target, mount("ext4")));
            assertFails(Status.Code.FAILED_PRECONDITION, () -> node.nodeUnstageVolume(unstage(staging)),
                    "is still published at [" + target + "]");
            Files.writeString(target.resolve("still.txt"), "in use\n");
            node.nodeUnpublishVolume(unpublish(target));
            node.nodeUnstageVolume(unstage(staging));
            assertNothingAttached(setup);
            assertThat(fileInImage(setup.image(), "/still.txt")).isEqualTo("in use\n");
        }
    }

    @Test
    void theKernelPathNamesWhatIsMissingOnANodeWithoutTheNbdDriver() throws Exception {
        try (Setup setup = setup("csi-kernel"); ServerProcess server = serve(setup);
             CsiPluginProcess plugin = CsiPluginProcess.start(setup.dir().path(), setup.dir().resolve("state"), "--attach", "kernel")) {
            boolean nbdDriver = Files.exists(Path.of("/sys/module/nbd"));
            var request = stage(setup, server, setup.dir().resolve("staging"), block());
            if (nbdDriver) {
                plugin.node().nodeStageVolume(request);
                assertThat(plugin.log()).contains("through the kernel on");
            } else {
                assertThatThrownBy(() -> plugin.node().nodeStageVolume(request))
                        .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
                            assertThat(e.getStatus().getDescription())
                                    .contains("generic netlink family 'nbd' not found (is the nbd kernel module loaded?)");
                        });
            }
        }
    }

    @Test
    void xfsIsMadeOnABlankVolumeAndFoundAgain() throws Exception {
        try (Setup setup = setup("csi-xfs", 320L << 20); ServerProcess server = serve(setup);
             CsiPluginProcess plugin = CsiPluginProcess.start(setup.dir().path(), setup.dir().resolve("state"))) {
            Path staging = setup.dir().resolve("staging");
            Path target = setup.dir().resolve("pod/volume");
            var node = plugin.node();
            node.nodeStageVolume(stage(setup, server, staging, mount("xfs")));
            node.nodePublishVolume(publish(staging, target, mount("xfs")));
            Files.writeString(target.resolve("x.txt"), "on xfs\n");
            node.nodeUnpublishVolume(unpublish(target));
            node.nodeUnstageVolume(unstage(staging));
            assertThat(PeerCommand.run(Duration.ofSeconds(10), "blkid", "-o", "value", "-s", "TYPE", setup.image().toString())
                    .stdout().strip()).isEqualTo("xfs");
            node.nodeStageVolume(stage(setup, server, staging, mount("xfs")));
            node.nodePublishVolume(publish(staging, target, mount("xfs")));
            assertThat(target.resolve("x.txt")).hasContent("on xfs");
            node.nodeUnpublishVolume(unpublish(target));
            node.nodeUnstageVolume(unstage(staging));
        }
    }

    @Test
    void blockVolumeRoundTripsAndExpands() throws Exception {
        try (Setup setup = setup("csi-block"); ServerProcess server = serve(setup);
             CsiPluginProcess plugin = CsiPluginProcess.start(setup.dir().path(), setup.dir().resolve("state"))) {
            ScratchDir dir = setup.dir();
            Path staging = dir.resolve("staging");
            Path target = dir.resolve("pod/dev/xvda");
            var node = plugin.node();
            node.nodeStageVolume(stage(setup, server, staging, block()));
            node.nodePublishVolume(publish(staging, target, block()));
            byte[] pattern = new byte[1 << 20];
            java.util.Arrays.fill(pattern, (byte) 0x5a);
            Files.write(dir.resolve("pattern"), pattern);
            PeerCommand.run(Duration.ofSeconds(60), "dd", "if=" + dir.resolve("pattern"), "of=" + target, "bs=1M", "count=1",
                    "seek=3", "oflag=direct", "conv=notrunc,fsync").assertSuccess();

            // The volume grows (the PVC was expanded and the server restarted on the larger image);
            // NodeExpandVolume makes the device follow.
            server.terminate(Duration.ofSeconds(10));
            try (RandomAccessFile file = new RandomAccessFile(setup.image().toFile(), "rw")) {
                file.setLength(SIZE * 2);
            }
            try (ServerProcess restarted = server.restart()) {
                var expanded = node.nodeExpandVolume(NodeExpandVolumeRequest.newBuilder().setVolumeId("ns/vol")
                        .setVolumePath(target.toString()).setStagingTargetPath(staging.toString()).build());
                assertThat(expanded.getCapacityBytes()).isEqualTo(SIZE * 2);
                assertThat(PeerCommand.run(Duration.ofSeconds(10), "blockdev", "--getsize64", target.toString()).stdout().strip())
                        .isEqualTo(Long.toString(SIZE * 2));
                node.nodeUnpublishVolume(unpublish(target));
                node.nodeUnstageVolume(unstage(staging));
                byte[] onServer = new byte[pattern.length];
                try (RandomAccessFile file = new RandomAccessFile(setup.image().toFile(), "r")) {
                    file.seek(3L << 20);
                    file.readFully(onServer);
                }
                assertThat(onServer).isEqualTo(pattern);
                assertThat(target).doesNotExist();
            }
        }
    }

    /** A plugin stages and publishes the volume, writes before.txt through it, and is killed (SIGKILL); returns the target. */
    private static Path stagePublishWriteAndCrash(Setup setup, ServerProcess server, Path staging) throws Exception {
        Path target = setup.dir().resolve("pod/volume");
        try (CsiPluginProcess plugin = CsiPluginProcess.start(setup.dir().path(), setup.dir().resolve("state"))) {
            plugin.node().nodeStageVolume(stage(setup, server, staging, mount("ext4")));
            plugin.node().nodePublishVolume(publish(staging, target, mount("ext4")));
            Files.writeString(target.resolve("before.txt"), "before the crash\n");
            PeerCommand.run(Duration.ofSeconds(60), "sync", "-f", target.resolve("before.txt").toString()).assertSuccess();
            plugin.kill();
        }
        return target;
    }

    @Test
    void aRestartedPluginAttachesItsVolumesAgain() throws Exception {
        try (Setup setup = setup("csi-restart"); ServerProcess server = serve(setup)) {
            ScratchDir dir = setup.dir();
            Path staging = dir.resolve("staging");
            Path target = stagePublishWriteAndCrash(setup, server, staging);
            try (CsiPluginProcess plugin = CsiPluginProcess.start(dir.path(), dir.resolve("state"))) {
                assertThat(plugin.log()).contains("re-attached after restart");
                assertThat(target.resolve("before.txt")).hasContent("before the crash");
                Files.writeString(target.resolve("after.txt"), "after the restart\n");
                // Calls for the recovered volume are idempotent, and nothing is attached twice.
                plugin.node().nodeStageVolume(stage(setup, server, staging, mount("ext4")));
                plugin.node().nodePublishVolume(publish(staging, target, mount("ext4")));
                plugin.node().nodeUnpublishVolume(unpublish(target));
                plugin.node().nodeUnstageVolume(unstage(staging));
                assertThat(fileInImage(setup.image(), "/after.txt")).isEqualTo("after the restart\n");
            }
            var loops = PeerCommand.run(Duration.ofSeconds(10), "losetup", "-a");
            assertThat(loops.stdout()).doesNotContain(dir.path().toString());
        }
    }
}
