package io.kubenbd.node.csi;

import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import org.junit.jupiter.api.Test;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * kubernetes-csi's csi-sanity (built from the Go module proxy by scripts/k8s-test-binaries.sh)
 * against {@code nbd-node csi} from the packaged jar, with volumes served by real
 * {@code nbd-node serve} processes over TLS-PSK through {@link SanityController}. The
 * Identity and Node suites run; the Controller suites are left out with ginkgo's skip, since
 * kube-nbd's controller plugin (the operator's, which only publishes and unpublishes; CsiAttachIT
 * in the operator module tests it) is not what this endpoint serves: the test controller only
 * hands out volumes, and csi-sanity asks it for the Identity service too, so it serves ours.
 */
class CsiSanityIT {
    private static final Path CSI_SANITY = Path.of(System.getProperty("user.home"),
            ".cache/kube-nbd/bin/csi-sanity-v5.6.0/csi-sanity");

    /** The plugin's log, read when a failure needs it explained. */
    private interface LogSource {
        String read() throws java.io.IOException;
    }

    @Test
    void csiSanityPassesTheIdentityAndNodeSuites() throws Exception {
        assertThat(CSI_SANITY).as("csi-sanity (run scripts/k8s-test-binaries.sh csi-sanity)").isExecutable();
        PeerCommand.requireInstalled("psktool", "losetup", "mkfs.ext4", "blkid");
        try (ScratchDir dir = ScratchDir.create("csi-sanity");
             SanityController controller = new SanityController(dir.path(), dir.resolve("keys.psk"))) {
            writeSecrets(dir);
            Path controllerSocket = dir.resolve("controller.sock");
            controller.serve(controllerSocket, new IdentityService());
            try (CsiPluginProcess plugin = CsiPluginProcess.start(dir.path(), dir.resolve("state"))) {
                Path pluginSocket = plugin.socket();
                runSanity(dir, List.of("-csi.endpoint", "unix://" + pluginSocket,
                        "-csi.controllerendpoint", "unix://" + controllerSocket,
                        "-ginkgo.skip", "Controller Server"), plugin::log, 20);
            }
        }
    }

    /**
     * The volume lifecycle specs ("should work", "should be idempotent") run only when the node
     * endpoint itself claims a controller service. So here the Node service runs in this JVM,
     * behind one socket with the test controller and an Identity that says so.
     */
    @Test
    void csiSanityRunsTheVolumeLifecycleAgainstTheNodeService() throws Exception {
        assertThat(CSI_SANITY).as("csi-sanity (run scripts/k8s-test-binaries.sh csi-sanity)").isExecutable();
        PeerCommand.requireInstalled("psktool", "losetup", "mkfs.ext4", "blkid");
        try (ScratchDir dir = ScratchDir.create("csi-lifecycle");
             SanityController controller = new SanityController(dir.path(), dir.resolve("keys.psk"))) {
            writeSecrets(dir);
            Path socket = dir.resolve("driver.sock");
            controller.serve(socket, new SanityController.IdentityWithController(),
                    new NodeService("sanity-node", new NodeState(dir.resolve("state")), CsiServer.DEFAULT_FUSE_LIBRARY,
                            NodeService.AttachMode.AUTO, null));
            try {
                String report = runSanity(dir, List.of("-csi.endpoint", "unix://" + socket,
                        "-ginkgo.focus", "Node Service"), () -> "(in this JVM: see the test output)", 23);
                for (String lifecycle : List.of("Node Service should work", "Node Service should be idempotent")) {
                    assertThat(report).containsPattern("<testcase name=\"\\[It\\] " + lifecycle + "\"[^>]*status=\"passed\"");
                }
            } finally {
                NodeLeftovers.release(dir.path());
            }
        }
    }

    private static void writeSecrets(ScratchDir dir) throws Exception {
        PeerCommand.run(Duration.ofSeconds(10), "psktool", "-u", "kube-nbd", "-p", dir.resolve("keys.psk").toString())
                .assertSuccess();
        Files.writeString(dir.resolve("secrets.yaml"), "NodeStageVolumeSecret:\n  keys.psk: \""
                + Files.readString(dir.resolve("keys.psk")).strip() + "\"\n");
    }

    /** Runs csi-sanity, requires no failure and at least {@code minimumPassed} passed specs; returns its JUnit report. */
    private static String runSanity(ScratchDir dir, List<String> endpoints, LogSource pluginLog, int minimumPassed)
            throws Exception {
        List<String> command = new java.util.ArrayList<>(List.of(CSI_SANITY.toString(),
                "-csi.stagingdir", dir.resolve("staging").toString(),
                "-csi.mountdir", dir.resolve("mount").toString(),
                "-csi.secrets", dir.resolve("secrets.yaml").toString(),
                "-csi.testvolumesize", Long.toString(64L << 20),
                "-csi.testvolumeexpandsize", Long.toString(64L << 20),
                "-ginkgo.junit-report", dir.resolve("sanity.xml").toString(),
                "-ginkgo.no-color"));
        command.addAll(endpoints);
        var sanity = PeerCommand.run(Duration.ofMinutes(10), command);
        String output = sanity.stdout() + sanity.stderr();
        Matcher summary = Pattern.compile("(\\d+) Passed \\| (\\d+) Failed \\| (\\d+) Pending \\| (\\d+) Skipped")
                .matcher(output);
        assertThat(summary.find()).as(output).isTrue();
        System.out.printf("csi-sanity: %s passed, %s failed, %s pending, %s skipped%n",
                summary.group(1), summary.group(2), summary.group(3), summary.group(4));
        // csi-sanity skips what a capability we do not claim needs; say which, besides the Controller suites.
        Matcher skipped = Pattern.compile("<testcase name=\"\\[It\\] ([^\"]*)\"[^>]*status=\"skipped\"")
                .matcher(Files.readString(dir.resolve("sanity.xml")));
        while (skipped.find()) {
            if (!skipped.group(1).contains("Controller")) {
                System.out.println("csi-sanity skipped: " + skipped.group(1));
            }
        }
        assertThat(Integer.parseInt(summary.group(2))).as("failures:\n%s\nplugin log:\n%s", output, pluginLog.read()).isZero();
        assertThat(Integer.parseInt(summary.group(1))).isGreaterThanOrEqualTo(minimumPassed);
        assertThat(sanity.exitCode()).isZero();
        return Files.readString(dir.resolve("sanity.xml"));
    }
}
