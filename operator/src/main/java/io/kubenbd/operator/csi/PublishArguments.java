package io.kubenbd.operator.csi;

import io.grpc.Status;
import io.grpc.StatusException;
import io.kubenbd.node.csi.v1.ControllerPublishVolumeRequest;
import io.kubenbd.node.csi.v1.VolumeCapability;
import io.kubenbd.node.csi.v1.VolumeCapability.AccessMode.Mode;

import java.util.Optional;

/**
 * The checked arguments of a ControllerPublishVolume call, and the one rule about capabilities
 * this driver has: a filesystem (Mount) volume cannot be written from several nodes, because the
 * filesystems the node plugin makes (ext4, xfs) are not cluster filesystems; two nodes mounting
 * one read-write corrupt it. Several writers on a raw Block volume are allowed (live migration of
 * a VM disk needs it; the writers coordinate themselves).
 *
 * @param singleNode whether the access mode lets only one node have the volume at a time
 */
record PublishArguments(String volumeId, String nodeId, Mode mode, boolean singleNode) {

    static PublishArguments of(ControllerPublishVolumeRequest request) throws StatusException {
        require(!request.getVolumeId().isEmpty(), "volume_id is required");
        require(!request.getNodeId().isEmpty(), "node_id is required");
        require(request.hasVolumeCapability(), "volume_capability is required");
        Optional<String> unsupported = unsupported(request.getVolumeCapability());
        if (unsupported.isPresent()) {
            throw invalid("volume " + request.getVolumeId() + ": " + unsupported.get());
        }
        // The spec makes the CO send false without the PUBLISH_READONLY capability, which this controller does not
        // offer: read-only is enforced by the node plugin (the PersistentVolume's csi.readOnly reaches NodePublishVolume).
        require(!request.getReadonly(), "readonly is set, but this controller does not offer PUBLISH_READONLY; "
                + "make the volume read-only with the PersistentVolume's csi.readOnly instead");
        Mode mode = request.getVolumeCapability().getAccessMode().getMode();
        return new PublishArguments(request.getVolumeId(), request.getNodeId(), mode, isSingleNode(mode));
    }

    /** Why this driver cannot serve a capability, or empty when it can. */
    static Optional<String> unsupported(VolumeCapability capability) {
        if (!capability.hasBlock() && !capability.hasMount()) {
            return Optional.of("volume_capability needs an access type, block or mount");
        }
        Mode mode = capability.getAccessMode().getMode();
        if (mode == Mode.UNKNOWN || mode == Mode.UNRECOGNIZED) {
            return Optional.of("volume_capability.access_mode is required (got " + mode + ")");
        }
        if (capability.hasMount() && mode == Mode.MULTI_NODE_MULTI_WRITER) {
            String fsType = capability.getMount().getFsType().isEmpty() ? "ext4" : capability.getMount().getFsType();
            return Optional.of("a filesystem volume (" + fsType + ") cannot be written from several nodes "
                    + "(MULTI_NODE_MULTI_WRITER, ReadWriteMany): " + fsType + " is not a cluster filesystem and two nodes "
                    + "mounting it read-write corrupt it; use ReadWriteOnce, or volumeMode Block if the writers coordinate "
                    + "themselves");
        }
        return Optional.empty();
    }

    /** The access modes with which the spec lets a volume be published on one node only at a time. */
    static boolean isSingleNode(Mode mode) {
        return switch (mode) {
            case SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY, SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_MULTI_WRITER -> true;
            case UNKNOWN, MULTI_NODE_READER_ONLY, MULTI_NODE_SINGLE_WRITER, MULTI_NODE_MULTI_WRITER, UNRECOGNIZED -> false;
        };
    }

    static void require(boolean condition, String message) throws StatusException {
        if (!condition) {
            throw invalid(message);
        }
    }

    private static StatusException invalid(String message) {
        return Status.INVALID_ARGUMENT.withDescription(message).asException();
    }
}
