package io.kubenbd.operator.csi;

import io.grpc.Status;
import io.grpc.StatusException;
import io.kubenbd.node.csi.v1.ControllerPublishVolumeRequest;
import io.kubenbd.node.csi.v1.VolumeCapability;
import io.kubenbd.node.csi.v1.VolumeCapability.AccessMode.Mode;
import org.junit.jupiter.api.Test;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** ControllerPublishVolume's argument checks, with the status codes the CSI spec names. */
class PublishArgumentsTest {

    private static VolumeCapability mount(Mode mode) {
        return VolumeCapability.newBuilder().setMount(VolumeCapability.MountVolume.newBuilder().setFsType("xfs"))
                .setAccessMode(VolumeCapability.AccessMode.newBuilder().setMode(mode)).build();
    }

    private static VolumeCapability block(Mode mode) {
        return VolumeCapability.newBuilder().setBlock(VolumeCapability.BlockVolume.getDefaultInstance())
                .setAccessMode(VolumeCapability.AccessMode.newBuilder().setMode(mode)).build();
    }

    private static ControllerPublishVolumeRequest.Builder valid() {
        return ControllerPublishVolumeRequest.newBuilder().setVolumeId("apps/disk").setNodeId("node-a")
                .setVolumeCapability(mount(Mode.SINGLE_NODE_WRITER));
    }

    private static void assertInvalid(ControllerPublishVolumeRequest request, String message) {
        assertThatThrownBy(() -> PublishArguments.of(request)).isInstanceOfSatisfying(StatusException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
            assertThat(e.getStatus().getDescription()).contains(message);
        });
    }

    @Test
    void volumeIdNodeIdAndCapabilityAreRequired() {
        assertInvalid(valid().clearVolumeId().build(), "volume_id is required");
        assertInvalid(valid().clearNodeId().build(), "node_id is required");
        assertInvalid(valid().clearVolumeCapability().build(), "volume_capability is required");
        assertInvalid(valid().setVolumeCapability(VolumeCapability.newBuilder()
                .setAccessMode(VolumeCapability.AccessMode.newBuilder().setMode(Mode.SINGLE_NODE_WRITER))).build(),
                "access type, block or mount");
        assertInvalid(valid().setVolumeCapability(mount(Mode.UNKNOWN)).build(), "access_mode is required");
    }

    @Test
    void aFilesystemIsNeverWrittenFromSeveralNodes() {
        assertInvalid(valid().setVolumeCapability(mount(Mode.MULTI_NODE_MULTI_WRITER)).build(),
                "volume apps/disk: a filesystem volume (xfs) cannot be written from several nodes");
    }

    @Test
    void severalWritersOfARawBlockVolumeAreTheirOwnBusiness() throws StatusException {
        PublishArguments arguments = PublishArguments.of(valid().setVolumeCapability(block(Mode.MULTI_NODE_MULTI_WRITER)).build());
        assertThat(arguments.singleNode()).isFalse();
    }

    @Test
    void readonlyIsRefusedBecausePublishReadonlyIsNotOffered() {
        assertInvalid(valid().setReadonly(true).build(), "does not offer PUBLISH_READONLY");
    }

    @Test
    void theSingleNodeModesAreExactlyTheSpecsSingleNodeOnes() throws StatusException {
        for (Mode mode : new Mode[] {Mode.SINGLE_NODE_WRITER, Mode.SINGLE_NODE_SINGLE_WRITER, Mode.SINGLE_NODE_MULTI_WRITER,
                Mode.SINGLE_NODE_READER_ONLY}) {
            assertThat(PublishArguments.of(valid().setVolumeCapability(mount(mode)).build()).singleNode()).as(mode.name()).isTrue();
        }
        for (Mode mode : new Mode[] {Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER}) {
            assertThat(PublishArguments.of(valid().setVolumeCapability(mount(mode)).build()).singleNode()).as(mode.name()).isFalse();
        }
    }

    @Test
    void volumeHandlesAreNamespaceSlashName() {
        assertThat(VolumeHandle.parse("apps/disk")).contains(new VolumeHandle("apps", "disk"));
        for (String notAnExport : new String[] {"disk", "/disk", "apps/", "a/b/c", ""}) {
            assertThat(VolumeHandle.parse(notAnExport)).as(notAnExport).isEmpty();
        }
    }
}
