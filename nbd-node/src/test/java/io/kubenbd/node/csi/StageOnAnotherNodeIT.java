package io.kubenbd.node.csi;

import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.kubenbd.node.csi.v1.NodeStageVolumeRequest;
import io.kubenbd.node.csi.v1.VolumeCapability;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The node plugin's own check of the controller's grant, through the packaged {@code nbd-node csi}:
 * a NodeStageVolume whose publish_context names another node fails before the plugin connects,
 * writes state or mounts anything. (Without the check the call would go on to connect to the
 * volume context's server, here a port nobody listens on, and fail with UNAVAILABLE instead.)
 */
class StageOnAnotherNodeIT {

    @Test
    void stagingAVolumePublishedToAnotherNodeAttachesNothing(@TempDir Path dir) throws Exception {
        Path state = dir.resolve("state");
        Path staging = dir.resolve("staging");
        try (CsiPluginProcess plugin = CsiPluginProcess.start(dir, state)) {
            var request = NodeStageVolumeRequest.newBuilder().setVolumeId("apps/disk")
                    .setStagingTargetPath(staging.toString())
                    .setVolumeCapability(VolumeCapability.newBuilder()
                            .setMount(VolumeCapability.MountVolume.newBuilder().setFsType("ext4"))
                            .setAccessMode(VolumeCapability.AccessMode.newBuilder()
                                    .setMode(VolumeCapability.AccessMode.Mode.SINGLE_NODE_WRITER)))
                    .putAllVolumeContext(Map.of("host", "127.0.0.1", "port", "9", "exportName", "disk",
                            "connections", "1", "tlsMode", "none"))
                    .putPublishContext("kubenbd.io/node", "other-node")
                    .build();
            assertThatThrownBy(() -> plugin.node().nodeStageVolume(request))
                    .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                        assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
                        assertThat(e.getStatus().getDescription())
                                .contains("published to node other-node, not to this node test-node");
                    });
            assertThat(plugin.log()).contains("volume=apps/disk").contains("FAILED_PRECONDITION");
        }
        assertThat(staging).doesNotExist();
        try (var recorded = Files.walk(state)) {
            assertThat(recorded.filter(Files::isRegularFile)).as("state recorded for a refused volume").isEmpty();
        }
    }
}
