package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.IntOrString;
import io.fabric8.kubernetes.api.model.networking.v1.NetworkPolicy;
import io.fabric8.kubernetes.api.model.networking.v1.NetworkPolicyBuilder;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.CRUDKubernetesDependentResource;
import io.kubenbd.operator.model.NbdExport;

import java.util.Map;

/**
 * A NetworkPolicy for one export's server pod that admits the control port from the operator's
 * pods only. The chart fences the server pods of the namespaces it is told about; when it knows
 * none (the operator watches every namespace and no export namespaces are listed), exports may
 * appear anywhere, and only the operator learns where, so it makes this policy itself. The NBD
 * port stays as open as without a policy: NetworkPolicies add up, and a narrower NBD rule here
 * would cut off the clients the administrator meant to admit. Made only in that case, so it
 * never widens the chart's own NBD fencing. Deleted with the export (owner reference).
 */
public final class ControlNetworkPolicyDependent extends CRUDKubernetesDependentResource<NetworkPolicy, NbdExport> {
    private final ControlNetworkPolicy policy;
    private final int controlPort;

    public ControlNetworkPolicyDependent(ControlNetworkPolicy policy, int controlPort) {
        super(NetworkPolicy.class);
        this.policy = policy;
        this.controlPort = controlPort;
    }

    public static String name(NbdExport export) {
        return export.getMetadata().getName() + "-control";
    }

    @Override
    protected NetworkPolicy desired(NbdExport export, Context<NbdExport> context) {
        return new NetworkPolicyBuilder()
                .withMetadata(ExportResources.metadata(export, name(export)))
                .withNewSpec()
                .withNewPodSelector().withMatchLabels(ExportResources.labels(export)).endPodSelector()
                .withPolicyTypes("Ingress")
                .addNewIngress()
                .addNewFrom()
                .withNewNamespaceSelector().withMatchLabels(Map.of("kubernetes.io/metadata.name", policy.operatorNamespace()))
                .endNamespaceSelector()
                .withNewPodSelector().withMatchLabels(policy.operatorLabels()).endPodSelector()
                .endFrom()
                .addNewPort().withProtocol("TCP").withPort(new IntOrString(controlPort)).endPort()
                .endIngress()
                .addNewIngress()
                .addNewPort().withProtocol("TCP").withPort(new IntOrString("nbd")).endPort()
                .endIngress()
                .endSpec()
                .build();
    }
}
