package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.PersistentVolume;
import io.fabric8.kubernetes.api.model.PersistentVolumeBuilder;
import io.fabric8.kubernetes.api.model.PersistentVolumeClaim;
import io.fabric8.kubernetes.api.model.Quantity;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.Creator;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.KubernetesDependentResource;
import io.javaoperatorsdk.operator.api.reconciler.dependent.Deleter;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.model.PersistentVolumeSpec.VolumeMode;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The PersistentVolume consumers claim to attach the export through the CSI driver. Its
 * {@code volumeAttributes} tell the node plugin where the server is and how many connections to
 * open; the PSK reaches the plugin through {@code nodeStageSecretRef}, never through attributes.
 * A PV is cluster-scoped and cannot be owned by a namespaced export, so it is created and deleted
 * here rather than garbage collected; its source is immutable once created.
 */
public final class ConsumerPersistentVolumeDependent extends KubernetesDependentResource<PersistentVolume, NbdExport>
        implements Creator<PersistentVolume, NbdExport>, Deleter<NbdExport> {
    private final ConsumerVolumePolicy policy;

    /** @param policy the class every volume gets; the claimRef was checked against it by {@link ExportPreflight} */
    public ConsumerPersistentVolumeDependent(ConsumerVolumePolicy policy) {
        super(PersistentVolume.class);
        this.policy = policy;
    }

    @Override
    protected PersistentVolume desired(NbdExport export, Context<NbdExport> context) {
        var spec = export.getSpec();
        var pv = spec.persistentVolume();
        Quantity capacity = context.getSecondaryResource(PersistentVolumeClaim.class)
                .map(ConsumerPersistentVolumeDependent::capacityOf)
                .orElse(new Quantity("1Gi"));
        Map<String, String> attributes = new LinkedHashMap<>();
        attributes.put("host", ExportResources.serviceHost(export));
        attributes.put("port", Integer.toString(spec.serviceOrDefault().portOrDefault()));
        attributes.put("exportName", export.exportName());
        // A consumer needs a few connections for throughput, and must leave room under maxConnections for others.
        attributes.put("connections", Integer.toString(Math.min(4, spec.maxConnectionsOrDefault())));
        attributes.put("tlsMode", spec.tlsOrDefault().modeOrDefault().name().toLowerCase(java.util.Locale.ROOT));
        String secret = ExportResources.tlsSecretName(export);
        var builder = new PersistentVolumeBuilder()
                .withNewMetadata()
                .withName(ExportResources.persistentVolumeName(export))
                .withLabels(ExportResources.labels(export))
                .endMetadata()
                .withNewSpec()
                .withCapacity(Map.of("storage", capacity))
                .withAccessModes(List.of(spec.readOnlyOrDefault() ? "ReadOnlyMany" : "ReadWriteOnce"))
                .withVolumeMode(pv.volumeModeOrDefault().name())
                .withPersistentVolumeReclaimPolicy("Retain")
                .withStorageClassName(policy.storageClassName())
                .withNewCsi()
                .withDriver(ExportResources.CSI_DRIVER)
                .withVolumeHandle(export.getMetadata().getNamespace() + "/" + export.getMetadata().getName())
                .withReadOnly(spec.readOnlyOrDefault())
                .withFsType(pv.volumeModeOrDefault() == VolumeMode.Filesystem ? pv.fsTypeOrDefault().name() : null)
                .withVolumeAttributes(attributes)
                .endCsi()
                .endSpec();
        if (pv.claimRef() != null) {
            // Bound in advance: only this claim can take the PV (and with it the export's key).
            builder.editSpec().withNewClaimRef().withNamespace(pv.claimRef().namespace()).withName(pv.claimRef().name())
                    .endClaimRef().endSpec();
        }
        if (secret != null) {
            builder.editSpec().editCsi().withNewNodeStageSecretRef(secret, export.getMetadata().getNamespace())
                    .endCsi().endSpec();
        }
        return builder.build();
    }

    /** The size the PVC got (status), or asked for while it is not yet bound. */
    private static Quantity capacityOf(PersistentVolumeClaim pvc) {
        if (pvc.getStatus() != null && pvc.getStatus().getCapacity() != null
                && pvc.getStatus().getCapacity().get("storage") != null) {
            return pvc.getStatus().getCapacity().get("storage");
        }
        var requests = pvc.getSpec().getResources() == null ? null : pvc.getSpec().getResources().getRequests();
        return requests == null || requests.get("storage") == null ? new Quantity("1Gi") : requests.get("storage");
    }
}
