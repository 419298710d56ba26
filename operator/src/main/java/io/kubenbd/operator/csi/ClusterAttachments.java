package io.kubenbd.operator.csi;

import io.fabric8.kubernetes.api.model.PersistentVolume;
import io.fabric8.kubernetes.api.model.storage.VolumeAttachment;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.kubenbd.operator.reconciler.ExportResources;

import java.util.List;
import java.util.Map;
import java.util.function.Function;
import java.util.stream.Collectors;

/**
 * What Kubernetes records about where one volume is attached: the VolumeAttachments of this
 * driver whose PersistentVolume carries the volume's handle. Read from the API server on every
 * call rather than from an informer cache: attach and detach are rare, and a stale cache could
 * miss the attachment that must refuse the next one.
 */
final class ClusterAttachments {

    /**
     * One VolumeAttachment of the volume.
     *
     * @param attached   the external-attacher recorded a successful ControllerPublishVolume (status.attached)
     * @param deleting   the attach/detach controller asked for a detach (deletionTimestamp set)
     * @param readWrite  its PersistentVolume lets one node write (ReadWriteOnce or ReadWriteOncePod, not csi.readOnly)
     */
    record NodeAttachment(String name, String node, String persistentVolume, boolean attached, boolean deleting,
                          boolean readWrite) {
    }

    private final KubernetesClient client;

    ClusterAttachments(KubernetesClient client) {
        this.client = client;
    }

    /** The VolumeAttachments of this driver for every PersistentVolume whose volume handle is {@code volumeId}. */
    List<NodeAttachment> of(String volumeId) {
        Map<String, PersistentVolume> volumes = client.persistentVolumes().list().getItems().stream()
                .filter(pv -> pv.getSpec().getCsi() != null
                        && ExportResources.CSI_DRIVER.equals(pv.getSpec().getCsi().getDriver())
                        && volumeId.equals(pv.getSpec().getCsi().getVolumeHandle()))
                .collect(Collectors.toMap(pv -> pv.getMetadata().getName(), Function.identity()));
        if (volumes.isEmpty()) {
            return List.of();
        }
        return client.storage().v1().volumeAttachments().list().getItems().stream()
                .filter(va -> ExportResources.CSI_DRIVER.equals(va.getSpec().getAttacher())
                        && va.getSpec().getSource() != null
                        && volumes.containsKey(va.getSpec().getSource().getPersistentVolumeName()))
                .map(va -> nodeAttachment(va, volumes.get(va.getSpec().getSource().getPersistentVolumeName())))
                .toList();
    }

    private static NodeAttachment nodeAttachment(VolumeAttachment va, PersistentVolume pv) {
        boolean attached = va.getStatus() != null && Boolean.TRUE.equals(va.getStatus().getAttached());
        List<String> modes = pv.getSpec().getAccessModes() == null ? List.of() : pv.getSpec().getAccessModes();
        boolean readWrite = !Boolean.TRUE.equals(pv.getSpec().getCsi().getReadOnly())
                && (modes.contains("ReadWriteOnce") || modes.contains("ReadWriteOncePod"));
        return new NodeAttachment(va.getMetadata().getName(), va.getSpec().getNodeName(), pv.getMetadata().getName(),
                attached, va.getMetadata().getDeletionTimestamp() != null, readWrite);
    }
}
