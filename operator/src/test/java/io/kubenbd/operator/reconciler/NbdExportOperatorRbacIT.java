package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.api.model.coordination.v1.Lease;
import io.kubenbd.operator.runtime.OperatorOptions;
import io.kubenbd.operator.testing.Await;
import io.kubenbd.operator.testing.HelmChart;
import io.kubenbd.operator.testing.KubeTestCluster;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The operator's scenarios again, with the operator acting as the chart's ServiceAccount
 * (impersonated against the real API server) with only the chart's RBAC, and leader election
 * on a Lease in the release namespace: a permission the chart forgot fails a scenario.
 */
class NbdExportOperatorRbacIT extends OperatorScenarios {
    private String user;

    @Override
    KubernetesClient operatorClient(KubeTestCluster cluster) throws Exception {
        user = HelmChart.installRbac(cluster.client());
        return cluster.clientAs(user);
    }

    @Override
    String leaseNamespace(KubeTestCluster cluster) {
        return HelmChart.NAMESPACE;
    }

    private boolean allowed(KubeTestCluster cluster, String verb, String group, String resource, String namespace) {
        return cluster.serviceAccountMay(user, verb, group, resource, namespace);
    }

    /** Lease renewals fail quietly (the instance just stops leading), so check the holder keeps renewing. */
    @Test
    void theOperatorHoldsAndRenewsItsLease(KubeTestCluster cluster) {
        var leases = cluster.client().leases().inNamespace(HelmChart.NAMESPACE).withName(OperatorOptions.DEFAULT_LEASE_NAME);
        Lease first = Await.until("the operator's Lease", Duration.ofSeconds(30), leases::get,
                lease -> "it".equals(lease.getSpec().getHolderIdentity()) && lease.getSpec().getRenewTime() != null);
        Await.until("the Lease renewed", Duration.ofSeconds(20), leases::get,
                lease -> lease.getSpec().getRenewTime().isAfter(first.getSpec().getRenewTime())
                        && "it".equals(lease.getSpec().getHolderIdentity()));
    }

    @Test
    void theServiceAccountMayDoNoMoreThanTheOperatorNeeds(KubeTestCluster cluster) {
        // What the scenarios above exercise is allowed (they pass); these must not be.
        record Access(String verb, String group, String resource, String namespace) {
        }
        for (Access denied : List.of(
                new Access("create", "", "pods", "default"),
                new Access("update", "", "secrets", "default"),
                new Access("list", "", "nodes", null),
                new Access("update", "", "nodes", null),
                // The csi-attacher patches; it never creates, updates or deletes VolumeAttachments (the A/D controller does).
                new Access("create", "storage.k8s.io", "volumeattachments", null),
                new Access("update", "storage.k8s.io", "volumeattachments", null),
                new Access("delete", "storage.k8s.io", "volumeattachments", null),
                new Access("update", "storage.k8s.io", "volumeattachments/status", null),
                new Access("update", "", "persistentvolumes", null),
                new Access("patch", "storage.k8s.io", "csinodes", null),
                new Access("patch", "storage.k8s.io", "csidrivers", null),
                new Access("create", "apps", "deployments", "default"),
                new Access("create", "rbac.authorization.k8s.io", "clusterrolebindings", null),
                new Access("delete", "apiextensions.k8s.io", "customresourcedefinitions", null),
                new Access("create", "", "configmaps", "default"),
                new Access("update", "coordination.k8s.io", "leases", "default"))) {
            assertThat(allowed(cluster, denied.verb(), denied.group(), denied.resource(), denied.namespace()))
                    .as("%s may %s %s", user, denied.verb(), denied.resource()).isFalse();
        }
        assertThat(allowed(cluster, "update", "coordination.k8s.io", "leases", HelmChart.NAMESPACE)).isTrue();
        // What the csi-attacher sidecar and the operator's CSI controller use (CsiAttachIT runs them with exactly this).
        record Allowed(String verb, String group, String resource) {
        }
        for (Allowed access : List.of(
                new Allowed("watch", "storage.k8s.io", "volumeattachments"),
                new Allowed("patch", "storage.k8s.io", "volumeattachments"),
                new Allowed("patch", "storage.k8s.io", "volumeattachments/status"),
                new Allowed("watch", "storage.k8s.io", "csinodes"),
                new Allowed("patch", "", "persistentvolumes"),
                new Allowed("get", "", "nodes"))) {
            assertThat(allowed(cluster, access.verb(), access.group(), access.resource(), null))
                    .as("%s may %s %s", user, access.verb(), access.resource()).isTrue();
        }
        for (String verb : List.of("get", "create", "update")) {
            assertThat(allowed(cluster, verb, "coordination.k8s.io", "leases", HelmChart.NAMESPACE))
                    .as("the attacher's leader election may %s its Lease", verb).isTrue();
        }
        assertThat(allowed(cluster, "patch", "kubenbd.io", "nbdexports/status", "default")).isTrue();
    }
}
