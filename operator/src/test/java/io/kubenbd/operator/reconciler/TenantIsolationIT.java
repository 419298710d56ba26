package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.NamespaceBuilder;
import io.fabric8.kubernetes.api.model.PersistentVolume;
import io.fabric8.kubernetes.api.model.PersistentVolumeClaim;
import io.fabric8.kubernetes.api.model.PersistentVolumeClaimBuilder;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.SecretBuilder;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.runtime.KubeNbdOperator;
import io.kubenbd.operator.runtime.OperatorOptions;
import io.kubenbd.operator.testing.Await;
import io.kubenbd.operator.testing.KubeTestCluster;
import io.kubenbd.operator.testing.KubeTestClusterExtension;
import io.kubenbd.operator.testing.OperatorTestBed;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static io.kubenbd.operator.testing.OperatorTestBed.awaitPhase;
import static io.kubenbd.operator.testing.OperatorTestBed.createClaim;
import static io.kubenbd.operator.testing.OperatorTestBed.createExport;
import static io.kubenbd.operator.testing.OperatorTestBed.export;
import static io.kubenbd.operator.testing.OperatorTestBed.exportYaml;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * What a tenant who may create NbdExports in one namespace must not reach, tried against a real
 * API server, PersistentVolume binder and the operator: another namespace's claims, another
 * export's PersistentVolume, server options through a field that names a file, and a server that
 * anyone who reaches it may use.
 */
@ExtendWith(KubeTestClusterExtension.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class TenantIsolationIT {
    private static final Duration RECONCILED = Duration.ofSeconds(30);
    private KubeTestCluster cluster;
    private KubernetesClient client;
    private KubeNbdOperator operator;
    /** The namespace the administrator lets every export's volume be pre-bound to (--persistent-volume-consumer-namespaces). */
    private String sharedConsumers;

    @BeforeAll
    void startOperator(KubeTestCluster testCluster) throws Exception {
        cluster = testCluster;
        client = cluster.client();
        OperatorTestBed.installCrds(cluster);
        sharedConsumers = cluster.createNamespace("vms");
        operator = KubeNbdOperator.start(client, new OperatorOptions(Set.of(),
                new ServerSettings("kube-nbd:test", "Never", OperatorTestBed.freePort(), ServerSettings.DEFAULT_JAVA_OPTIONS),
                null, OperatorOptions.DEFAULT_LEASE_NAME, "tenant-isolation", "127.0.0.1", -1, 4, false,
                new ConsumerVolumePolicy(ConsumerVolumePolicy.DEFAULT_STORAGE_CLASS, Set.of(sharedConsumers)),
                cluster.createNamespace("operator")));
    }

    @AfterAll
    void stopOperator() {
        if (operator != null) {
            operator.close();
        }
    }

    private static PersistentVolumeClaim consumerClaim(KubernetesClient client, String namespace, String name, String storageClass) {
        return client.persistentVolumeClaims().inNamespace(namespace).resource(new PersistentVolumeClaimBuilder()
                .withNewMetadata().withName(name).endMetadata()
                .withNewSpec().withAccessModes("ReadWriteOnce").withVolumeMode("Filesystem").withStorageClassName(storageClass)
                .withNewResources().withRequests(Map.of("storage", new Quantity("64Mi"))).endResources()
                .endSpec().build()).create();
    }

    private String claimPhase(String namespace, String name) {
        var claim = client.persistentVolumeClaims().inNamespace(namespace).withName(name).get();
        return claim.getStatus() == null ? null : claim.getStatus().getPhase();
    }

    /** The PersistentVolumes whose CSI volume handle is an export of {@code namespace}. */
    private List<PersistentVolume> volumesOfExportsIn(String namespace) {
        return client.persistentVolumes().list().getItems().stream()
                .filter(pv -> pv.getSpec().getCsi() != null && pv.getSpec().getCsi().getVolumeHandle().startsWith(namespace + "/"))
                .toList();
    }

    private static String readyReason(NbdExport export) {
        var ready = export.getStatus() == null ? null : export.getStatus().condition("Ready");
        return ready == null ? null : ready.getReason();
    }

    /**
     * Tenant A tries to hand its volume (and with it its server and key) to tenant B's pending claim: pre-bound
     * through claimRef, and offered through B's claim's class. The binder that binds B's own pre-bound claim, and
     * A's claim in the namespace the administrator allows, never gives B's other claim a volume of A.
     */
    @Test
    void anExportNeverBindsItsVolumeToAClaimInAnotherNamespace() {
        String tenantA = cluster.createNamespace("tenant-a");
        String tenantB = cluster.createNamespace("tenant-b");
        consumerClaim(client, tenantB, "victim", "standard");
        createClaim(client, tenantA, "prebind", "Filesystem");
        createClaim(client, tenantA, "offer", "Filesystem");
        createExport(client, tenantA, exportYaml("prebind", "prebind",
                "persistentVolume: {create: true, claimRef: {namespace: %s, name: victim}}".formatted(tenantB)));
        createExport(client, tenantA, exportYaml("offer", "offer", "persistentVolume: {create: true, storageClassName: standard}"));
        createClaim(client, tenantA, "shared", "Filesystem");
        createExport(client, tenantA, exportYaml("shared", "shared",
                "persistentVolume: {create: true, storageClassName: kube-nbd, claimRef: {namespace: %s, name: vm}}"
                        .formatted(sharedConsumers)));
        consumerClaim(client, sharedConsumers, "vm", "kube-nbd");

        // B's own export, pre-bound to B's claim: the binder runs and binds what it may.
        createClaim(client, tenantB, "own", "Filesystem");
        createExport(client, tenantB, exportYaml("own", "own",
                "persistentVolume: {create: true, claimRef: {namespace: %s, name: consumer}}".formatted(tenantB)));
        consumerClaim(client, tenantB, "consumer", "kube-nbd");
        Await.until("B's claim consumer bound to B's export's volume", Duration.ofSeconds(60),
                () -> claimPhase(tenantB, "consumer"), "Bound"::equals);
        assertThat(claimPhase(tenantB, "victim")).as("B's claim of class standard").isEqualTo("Pending");

        NbdExport prebind = Await.until("A's cross-namespace claimRef reported", RECONCILED, () -> export(client, tenantA, "prebind"),
                e -> "ClaimNamespaceNotAllowed".equals(readyReason(e)));
        assertThat(prebind.getStatus().condition("Ready").getMessage())
                .contains("persistentVolume.claimRef.namespace " + tenantB).contains(tenantA);
        NbdExport offer = Await.until("A's foreign storage class reported", RECONCILED, () -> export(client, tenantA, "offer"),
                e -> "StorageClassNotAllowed".equals(readyReason(e)));
        assertThat(offer.getStatus().condition("Ready").getMessage()).contains("standard").contains("kube-nbd");
        assertThat(claimPhase(tenantB, "victim")).as("B's claim of class standard, later").isEqualTo("Pending");
        Await.until("the allowed consumer namespace's claim bound", Duration.ofSeconds(60),
                () -> claimPhase(sharedConsumers, "vm"), "Bound"::equals);
        assertThat(volumesOfExportsIn(tenantA)).as("A's only PersistentVolume").singleElement()
                .satisfies(pv -> assertThat(pv.getSpec().getCsi().getVolumeHandle()).isEqualTo(tenantA + "/shared"));
        assertThat(export(client, tenantA, "shared").getStatus().condition("PersistentVolumeReady").getStatus()).isEqualTo("True");
    }

    /** {@code team-a/db} and {@code team/a-db} once both became {@code nbdexport-team-a-db}. */
    @Test
    void persistentVolumeNamesOfExportsInDifferentNamespacesNeverCollide() {
        for (String ns : List.of("team-a", "team")) {
            if (client.namespaces().withName(ns).get() == null) {
                client.namespaces().resource(new NamespaceBuilder().withNewMetadata().withName(ns).endMetadata().build()).create();
            }
        }
        createClaim(client, "team-a", "db", "Filesystem");
        createClaim(client, "team", "a-db", "Filesystem");
        createExport(client, "team-a", exportYaml("db", "db", "persistentVolume: {create: true}"));
        createExport(client, "team", exportYaml("a-db", "a-db", "persistentVolume: {create: true}"));
        for (var export : List.of(List.of("team-a", "db"), List.of("team", "a-db"))) {
            String ns = export.get(0);
            String name = export.get(1);
            PersistentVolume pv = OperatorTestBed.awaitPersistentVolume(client, ns, name, RECONCILED);
            assertThat(pv.getSpec().getCsi().getVolumeHandle()).as("the volume status names serves " + ns + "/" + name)
                    .isEqualTo(ns + "/" + name);
        }
        assertThat(export(client, "team-a", "db").getStatus().persistentVolume())
                .isNotEqualTo(export(client, "team", "a-db").getStatus().persistentVolume());
    }

    @Test
    void anImagePathCannotAddServerOptions() {
        String ns = cluster.createNamespace("inject");
        for (String imagePath : List.of("disk.img,backing=/etc/passwd", "disk.img,format=raw", "disk.img\\nbacking=/etc/passwd",
                "disk.img\\tx")) {
            assertThatThrownBy(() -> createExport(client, ns, exportYaml("inject", "disk", "").replace("imagePath: disk.img",
                    "imagePath: \"" + imagePath + "\"")))
                    .as(imagePath).isInstanceOf(KubernetesClientException.class)
                    .hasMessageContaining("source.imagePath must not contain commas or control characters");
        }
        assertThat(export(client, ns, "inject")).isNull();
    }

    /** The pod spec carries no {@code --export NAME=PATH,...} made of what a tenant wrote. */
    @Test
    void theServerGetsItsExportFromAConfigFileNotFromAnOptionString() {
        String ns = cluster.createNamespace("config");
        createClaim(client, ns, "vm", "Filesystem");
        createExport(client, ns, exportYaml("vm", "vm", "exportName: vm-disk\nreadOnly: true")
                .replace("imagePath: disk.img", "imagePath: images/disk=1.img"));
        StatefulSet sts = Await.until("StatefulSet vm-nbd", RECONCILED,
                () -> client.apps().statefulSets().inNamespace(ns).withName("vm-nbd").get(), s -> true);
        List<String> args = sts.getSpec().getTemplate().getSpec().getContainers().getFirst().getArgs();
        assertThat(args).noneMatch(a -> a.startsWith("--export"))
                .noneMatch(a -> a.contains("images/disk=1.img") || a.contains("vm-disk"));
    }

    @Test
    void plainNbdIsRefusedOnNodePortAndLoadBalancerServices() {
        String ns = cluster.createNamespace("plain");
        for (String type : List.of("NodePort", "LoadBalancer")) {
            assertThatThrownBy(() -> createExport(client, ns, exportYaml("plain", "disk",
                    "tls: {mode: none}\nservice: {type: %s}".formatted(type))))
                    .as(type).isInstanceOf(KubernetesClientException.class)
                    .hasMessageContaining("tls.mode none is allowed only with service.type ClusterIP");
        }
        createExport(client, ns, exportYaml("inside", "disk", "tls: {mode: none}\nservice: {type: ClusterIP}"));
        createExport(client, ns, exportYaml("outside", "disk2", "service: {type: NodePort}"));
    }

    @Test
    void aUserSuppliedPskShorterThan128BitsIsRefused() {
        String ns = cluster.createNamespace("shortpsk");
        String shortKey = "0123456789abcdef0123456789abcd"; // 120 bits
        client.secrets().inNamespace(ns).resource(new SecretBuilder().withNewMetadata().withName("short").endMetadata()
                .withData(Map.of("keys.psk", Base64.getEncoder().encodeToString(
                        ("backup:" + shortKey + "\n").getBytes(StandardCharsets.US_ASCII)))).build()).create();
        createClaim(client, ns, "disk", "Filesystem");
        createExport(client, ns, exportYaml("disk", "disk", "tls: {mode: psk, secretName: short}"));
        NbdExport failed = awaitPhase(client, ns, "disk", "Failed", RECONCILED);
        var ready = failed.getStatus().condition("Ready");
        assertThat(ready.getReason()).isEqualTo("PskTooShort");
        assertThat(ready.getMessage()).contains("120 bits").contains("at least 128").doesNotContain(shortKey);
        assertThat(client.apps().statefulSets().inNamespace(ns).withName("disk-nbd").get()).isNull();
    }

    /** X.509 without {@code ca.crt} lets in any client: only when the spec says so, and status shows it. */
    @Test
    void x509WithoutClientCertificatesNeedsAnExplicitField() {
        String ns = cluster.createNamespace("x509");
        client.secrets().inNamespace(ns).resource(new SecretBuilder().withNewMetadata().withName("certs").endMetadata()
                .withType("kubernetes.io/tls")
                .withData(Map.of("tls.crt", Base64.getEncoder().encodeToString("cert".getBytes(StandardCharsets.US_ASCII)),
                        "tls.key", Base64.getEncoder().encodeToString("key".getBytes(StandardCharsets.US_ASCII)))).build()).create();
        createClaim(client, ns, "strict", "Filesystem");
        createClaim(client, ns, "open", "Filesystem");
        createExport(client, ns, exportYaml("strict", "strict", "tls: {mode: x509, secretName: certs}"));
        NbdExport strict = awaitPhase(client, ns, "strict", "Failed", RECONCILED);
        assertThat(strict.getStatus().condition("Ready").getReason()).isEqualTo("ClientCaMissing");
        assertThat(strict.getStatus().condition("Ready").getMessage()).contains("ca.crt").contains("clientAuthentication: None");
        assertThat(client.apps().statefulSets().inNamespace(ns).withName("strict-nbd").get()).isNull();

        createExport(client, ns, exportYaml("open", "open", "tls: {mode: x509, secretName: certs, clientAuthentication: None}"));
        StatefulSet sts = Await.until("StatefulSet open-nbd", RECONCILED,
                () -> client.apps().statefulSets().inNamespace(ns).withName("open-nbd").get(), s -> true);
        assertThat(sts.getSpec().getTemplate().getSpec().getContainers().getFirst().getArgs()).doesNotContain("--tls-ca");
        NbdExport open = Await.until("condition ClientsAuthenticated", RECONCILED, () -> export(client, ns, "open"),
                e -> e.getStatus() != null && e.getStatus().condition("ClientsAuthenticated") != null);
        var authenticated = open.getStatus().condition("ClientsAuthenticated");
        assertThat(authenticated.getStatus() + "/" + authenticated.getReason()).isEqualTo("False/NotRequired");

        assertThatThrownBy(() -> createExport(client, ns, exportYaml("psk", "open", "tls: {mode: psk, clientAuthentication: None}")))
                .isInstanceOf(KubernetesClientException.class)
                .hasMessageContaining("tls.clientAuthentication applies to tls.mode x509 only");
    }
}
