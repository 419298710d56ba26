package io.kubenbd.operator.testing;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.fabric8.kubernetes.api.model.ConfigMap;
import io.fabric8.kubernetes.api.model.ConfigMapBuilder;
import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.Pod;
import io.fabric8.kubernetes.api.model.PodBuilder;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.apps.StatefulSetBuilder;
import io.fabric8.kubernetes.api.model.rbac.RoleBindingBuilder;
import io.fabric8.kubernetes.api.model.rbac.RoleBuilder;
import io.fabric8.kubernetes.client.Config;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientBuilder;
import io.fabric8.kubernetes.client.KubernetesClientException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

/**
 * Proves that {@link KubeTestCluster} is a cluster the operator tests can rely on: the expected
 * version, the controllers they depend on (garbage collection, StatefulSets, namespace deletion)
 * and RBAC enforced for impersonated users.
 */
@ExtendWith(KubeTestClusterExtension.class)
class KubeTestClusterIT {

    private static final long TIMEOUT_SECONDS = 30;

    private final KubeTestCluster cluster;
    private final KubernetesClient client;

    KubeTestClusterIT(KubeTestCluster cluster) {
        this.cluster = cluster;
        this.client = cluster.client();
    }

    @Test
    void runsTheKubernetesVersionTheScriptBuilds() {
        assertThat(client.getKubernetesVersion().getGitVersion()).isEqualTo(KubeBinaries.kubeVersion());
    }

    @Test
    void kubeconfigFileGivesAdminAccess() {
        String namespace = cluster.createNamespace("kubeconfig");
        Config config = Config.fromKubeconfig(cluster.kubeconfig().toFile());
        try (KubernetesClient fromFile = new KubernetesClientBuilder().withConfig(config).build()) {
            assertThat(fromFile.getMasterUrl().toString()).startsWith(cluster.serverUrl());
            assertThat(fromFile.namespaces().withName(namespace).get()).isNotNull();
        }
    }

    @Test
    void createdNamespaceAcceptsPodsAtOnce() {
        String namespace = cluster.createNamespace("pods");

        Pod pod = client.pods().inNamespace(namespace).resource(new PodBuilder()
                .withNewMetadata().withName("p").endMetadata()
                .withNewSpec().addNewContainer().withName("c").withImage("busybox").endContainer().endSpec()
                .build()).create();

        assertThat(client.namespaces().withName(namespace).get().getStatus().getPhase()).isEqualTo("Active");
        assertThat(pod.getSpec().getServiceAccountName()).isEqualTo("default");
    }

    @Test
    void garbageCollectsDependentsOfADeletedOwner() {
        String namespace = cluster.createNamespace("gc");
        ConfigMap owner = client.configMaps().inNamespace(namespace).resource(new ConfigMapBuilder()
                .withNewMetadata().withName("owner").endMetadata()
                .build()).create();
        client.configMaps().inNamespace(namespace).resource(new ConfigMapBuilder()
                .withNewMetadata().withName("dependent")
                .addNewOwnerReference()
                .withApiVersion("v1").withKind("ConfigMap").withName("owner").withUid(owner.getMetadata().getUid())
                .endOwnerReference()
                .endMetadata()
                .build()).create();

        client.configMaps().inNamespace(namespace).withName("owner").delete();

        client.configMaps().inNamespace(namespace).withName("dependent")
                .waitUntilCondition(Objects::isNull, TIMEOUT_SECONDS, TimeUnit.SECONDS);
    }

    @Test
    void statefulSetControllerCreatesPodsThatStayPending() {
        String namespace = cluster.createNamespace("sts");
        StatefulSet statefulSet = client.apps().statefulSets().inNamespace(namespace)
                .resource(statefulSetWithVolume("web")).create();

        Pod pod = client.pods().inNamespace(namespace).withName("web-0")
                .waitUntilCondition(Objects::nonNull, TIMEOUT_SECONDS, TimeUnit.SECONDS);

        assertThat(pod.getMetadata().getOwnerReferences())
                .singleElement()
                .satisfies(reference -> assertThat(reference.getUid()).isEqualTo(statefulSet.getMetadata().getUid()));
        // No scheduler and no kubelet: the pod is never placed on a node.
        assertThat(pod.getStatus().getPhase()).isEqualTo("Pending");
        assertThat(pod.getSpec().getNodeName()).isNull();
        assertThat(client.persistentVolumeClaims().inNamespace(namespace).withName("data-web-0").get()).isNotNull();
    }

    @Test
    void deletingANamespaceRemovesItAndItsContents() {
        String namespace = cluster.createNamespace("delete");
        client.apps().statefulSets().inNamespace(namespace).resource(statefulSetWithVolume("web")).create();
        client.pods().inNamespace(namespace).withName("web-0")
                .waitUntilCondition(Objects::nonNull, TIMEOUT_SECONDS, TimeUnit.SECONDS);

        client.namespaces().withName(namespace).delete();

        // Ends only if the controller manager removes the PVC's protection finalizer. The namespace
        // controller waits a fixed 5 s before acting and here needs a second round: about 10 s.
        client.namespaces().withName(namespace)
                .waitUntilCondition(Objects::isNull, 2 * TIMEOUT_SECONDS, TimeUnit.SECONDS);
    }

    @Test
    void rbacDecidesWhatAnImpersonatedServiceAccountMayDo() throws InterruptedException {
        String namespace = cluster.createNamespace("rbac");
        String serviceAccount = "system:serviceaccount:" + namespace + ":nobody";

        try (KubernetesClient nobody = cluster.clientAs(serviceAccount)) {
            assertThatThrownBy(() -> nobody.secrets().inNamespace(namespace).list())
                    .isInstanceOfSatisfying(KubernetesClientException.class,
                            e -> assertThat(e.getCode()).isEqualTo(403));

            client.rbac().roles().inNamespace(namespace).resource(new RoleBuilder()
                    .withNewMetadata().withName("read-secrets").endMetadata()
                    .addNewRule().withApiGroups("").withResources("secrets").withVerbs("list").endRule()
                    .build()).create();
            client.rbac().roleBindings().inNamespace(namespace).resource(new RoleBindingBuilder()
                    .withNewMetadata().withName("nobody-reads-secrets").endMetadata()
                    .withNewRoleRef().withApiGroup("rbac.authorization.k8s.io").withKind("Role")
                    .withName("read-secrets").endRoleRef()
                    .addNewSubject().withKind("ServiceAccount").withNamespace(namespace).withName("nobody").endSubject()
                    .build()).create();

            awaitAllowed(() -> nobody.secrets().inNamespace(namespace).list());
        }
        try (KubernetesClient master = cluster.clientAs("somebody", "system:masters")) {
            assertThat(master.secrets().inNamespace(namespace).list().getItems()).isEmpty();
        }
    }

    @Test
    void appliesEveryDocumentOfAYamlFileAndReappliesIt(@TempDir Path dir) throws IOException {
        String namespace = cluster.createNamespace("apply");
        Path file = dir.resolve("objects.yaml");

        Files.writeString(file, twoConfigMaps(namespace, "1"));
        List<HasMetadata> applied = cluster.applyYaml(file);
        Files.writeString(file, twoConfigMaps(namespace, "2"));
        cluster.applyYaml(file);

        assertThat(applied).extracting(o -> o.getMetadata().getName()).containsExactly("first", "second");
        for (String name : List.of("first", "second")) {
            assertThat(client.configMaps().inNamespace(namespace).withName(name).get().getData())
                    .isEqualTo(Map.of("round", "2"));
        }
    }

    /**
     * Runs {@code request} until RBAC allows it. Role changes reach the authorizer through an
     * informer, so they take effect a moment after they are written.
     */
    private static void awaitAllowed(Runnable request) throws InterruptedException {
        long deadline = System.nanoTime() + Duration.ofSeconds(TIMEOUT_SECONDS).toNanos();
        while (true) {
            try {
                request.run();
                return;
            } catch (KubernetesClientException e) {
                if (e.getCode() != 403 || System.nanoTime() - deadline > 0) {
                    throw e;
                }
            }
            Thread.sleep(100);
        }
    }

    private static StatefulSet statefulSetWithVolume(String name) {
        return new StatefulSetBuilder()
                .withNewMetadata().withName(name).endMetadata()
                .withNewSpec()
                .withReplicas(1)
                .withServiceName(name)
                .withNewSelector().addToMatchLabels("app", name).endSelector()
                .withNewTemplate()
                .withNewMetadata().addToLabels("app", name).endMetadata()
                .withNewSpec().addNewContainer().withName("c").withImage("busybox").endContainer().endSpec()
                .endTemplate()
                .addNewVolumeClaimTemplate()
                .withNewMetadata().withName("data").endMetadata()
                .withNewSpec()
                .withAccessModes("ReadWriteOnce")
                .withNewResources().addToRequests("storage", new Quantity("1Gi")).endResources()
                .endSpec()
                .endVolumeClaimTemplate()
                .endSpec()
                .build();
    }

    private static String twoConfigMaps(String namespace, String round) {
        return """
                apiVersion: v1
                kind: ConfigMap
                metadata:
                  name: first
                  namespace: %1$s
                data:
                  round: "%2$s"
                ---
                apiVersion: v1
                kind: ConfigMap
                metadata:
                  name: second
                  namespace: %1$s
                data:
                  round: "%2$s"
                """.formatted(namespace, round);
    }
}
