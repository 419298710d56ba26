package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.PersistentVolumeClaim;
import io.fabric8.kubernetes.api.model.Secret;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.apps.StatefulSetBuilder;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.CRUDKubernetesDependentResource;
import io.kubenbd.operator.model.NbdExport;

/**
 * The server workload: a StatefulSet of one replica. A StatefulSet, not a Deployment, because
 * it never starts a second pod while the first may still run (a Deployment's replacement pod can
 * overlap a terminating or unreachable one), so there are never two writers on the volume.
 * The kubelet restarts a crashed server; the StatefulSet controller replaces a lost pod.
 */
public final class ServerStatefulSetDependent extends CRUDKubernetesDependentResource<StatefulSet, NbdExport> {
    private final ServerSettings settings;

    public ServerStatefulSetDependent(ServerSettings settings) {
        super(StatefulSet.class);
        this.settings = settings;
    }

    @Override
    protected StatefulSet desired(NbdExport export, Context<NbdExport> context) {
        boolean block = context.getSecondaryResource(PersistentVolumeClaim.class)
                .map(pvc -> "Block".equals(pvc.getSpec().getVolumeMode()))
                .orElse(false);
        return new StatefulSetBuilder()
                .withMetadata(ExportResources.metadata(export, ExportResources.statefulSetName(export)))
                .withNewSpec()
                .withReplicas(1)
                .withServiceName(ExportResources.serviceName(export))
                .withNewSelector().withMatchLabels(ExportResources.labels(export)).endSelector()
                .withPodManagementPolicy("OrderedReady")
                .withNewUpdateStrategy().withType("RollingUpdate").endUpdateStrategy()
                .withTemplate(ServerPodTemplate.build(export, settings, block, x509WithCa(export, context)))
                .endSpec()
                .build();
    }

    private static boolean x509WithCa(NbdExport export, Context<NbdExport> context) {
        if (!export.getSpec().tlsOrDefault().clientCertificatesRequired()) {
            return false;
        }
        Secret secret = context.getClient().secrets().inNamespace(export.getMetadata().getNamespace())
                .withName(export.getSpec().tlsOrDefault().secretName()).get();
        return secret != null && secret.getData() != null && secret.getData().containsKey("ca.crt");
    }
}
