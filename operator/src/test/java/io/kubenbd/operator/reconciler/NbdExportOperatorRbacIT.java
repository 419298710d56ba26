package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.NamespaceBuilder;
import io.fabric8.kubernetes.api.model.apps.Deployment;
import io.fabric8.kubernetes.api.model.authorization.v1.ResourceAttributesBuilder;
import io.fabric8.kubernetes.api.model.authorization.v1.SubjectAccessReviewBuilder;
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
    private String serviceAccount;

    @Override
    KubernetesClient operatorClient(KubeTestCluster cluster) throws Exception {
        KubernetesClient admin = cluster.client();
        if (admin.namespaces().withName(HelmChart.NAMESPACE).get() == null) {
            admin.namespaces().resource(new NamespaceBuilder().withNewMetadata().withName(HelmChart.NAMESPACE).endMetadata()
                    .build()).create();
        }
        List<HasMetadata> objects = HelmChart.objects(admin, HelmChart.render());
        for (HasMetadata object : objects) {
            if (List.of("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding").contains(object.getKind())) {
                var resource = object.getMetadata().getNamespace() == null && object.getKind().matches("ServiceAccount|Role|RoleBinding")
                        ? admin.resource(object).inNamespace(HelmChart.NAMESPACE) : admin.resource(object);
                resource.forceConflicts().serverSideApply();
            }
        }
        serviceAccount = objects.stream().filter(Deployment.class::isInstance).map(Deployment.class::cast)
                .map(d -> d.getSpec().getTemplate().getSpec().getServiceAccountName()).findFirst().orElseThrow();
        return cluster.clientAs(user());
    }

    private String user() {
        return "system:serviceaccount:" + HelmChart.NAMESPACE + ":" + serviceAccount;
    }

    @Override
    String leaseNamespace(KubeTestCluster cluster) {
        return HelmChart.NAMESPACE;
    }

    private boolean allowed(KubeTestCluster cluster, String verb, String group, String resource, String namespace) {
        var review = cluster.client().authorization().v1().subjectAccessReview().create(new SubjectAccessReviewBuilder()
                .withNewSpec().withUser(user())
                .withGroups("system:serviceaccounts", "system:serviceaccounts:" + HelmChart.NAMESPACE, "system:authenticated")
                .withResourceAttributes(new ResourceAttributesBuilder().withVerb(verb).withGroup(group).withResource(resource)
                        .withNamespace(namespace).build())
                .endSpec().build());
        return review.getStatus().getAllowed();
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
                new Access("create", "apps", "deployments", "default"),
                new Access("create", "rbac.authorization.k8s.io", "clusterrolebindings", null),
                new Access("delete", "apiextensions.k8s.io", "customresourcedefinitions", null),
                new Access("create", "", "configmaps", "default"),
                new Access("update", "coordination.k8s.io", "leases", "default"))) {
            assertThat(allowed(cluster, denied.verb(), denied.group(), denied.resource(), denied.namespace()))
                    .as("%s may %s %s", user(), denied.verb(), denied.resource()).isFalse();
        }
        assertThat(allowed(cluster, "update", "coordination.k8s.io", "leases", HelmChart.NAMESPACE)).isTrue();
        assertThat(allowed(cluster, "patch", "kubenbd.io", "nbdexports/status", "default")).isTrue();
    }
}
