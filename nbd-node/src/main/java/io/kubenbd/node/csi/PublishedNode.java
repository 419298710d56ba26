package io.kubenbd.node.csi;

import io.grpc.Status;
import io.grpc.StatusException;

import java.util.Map;

/**
 * The node the CSI controller published a volume to, as it wrote it into publish_context
 * ({@value #KEY}, see the operator's CsiControllerService). Staging on any other node would
 * attach a volume the controller granted elsewhere: a mix-up of VolumeAttachments, or a
 * publish_context cached from an attachment that has moved. The last check before the device
 * is attached, so a second node never mounts a single-node filesystem.
 */
final class PublishedNode {
    static final String KEY = "kubenbd.io/node";

    private PublishedNode() {
    }

    /**
     * Fails with FAILED_PRECONDITION when {@code publishContext} names a node other than
     * {@code thisNode}. A context without the key passes: a PersistentVolume of a cluster
     * without the controller (CSIDriver attachRequired false) is staged without one.
     */
    static void requireThisNode(Map<String, String> publishContext, String thisNode, String volumeId)
            throws StatusException {
        String published = publishContext.get(KEY);
        if (published != null && !published.equals(thisNode)) {
            throw Status.FAILED_PRECONDITION.withDescription("volume " + volumeId + " was published to node " + published
                    + ", not to this node " + thisNode + "; nothing was attached. Check the VolumeAttachments of the "
                    + "volume: the attachment for node " + thisNode + " must be attached before this node stages it")
                    .asException();
        }
    }
}
