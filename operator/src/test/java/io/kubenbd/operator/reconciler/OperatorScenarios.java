package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.PersistentVolume;
import io.fabric8.kubernetes.api.model.Secret;
import io.fabric8.kubernetes.api.model.Service;
import io.fabric8.kubernetes.api.model.networking.v1.NetworkPolicy;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.fabric8.kubernetes.client.dsl.base.PatchContext;
import io.fabric8.kubernetes.client.dsl.base.PatchType;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ListExportsRequest;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.runtime.KubeNbdOperator;
import io.kubenbd.operator.runtime.OperatorOptions;
import io.kubenbd.operator.testing.Await;
import io.kubenbd.operator.testing.KubeTestCluster;
import io.kubenbd.operator.testing.KubeTestClusterExtension;
import io.kubenbd.operator.testing.LocalPodRunner;
import io.kubenbd.operator.testing.OperatorTestBed;
import io.kubenbd.operator.testing.PeerCommand;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Base64;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import static io.kubenbd.operator.testing.OperatorTestBed.awaitPhase;
import static io.kubenbd.operator.testing.OperatorTestBed.awaitServerPod;
import static io.kubenbd.operator.testing.OperatorTestBed.createClaim;
import static io.kubenbd.operator.testing.OperatorTestBed.createExport;
import static io.kubenbd.operator.testing.OperatorTestBed.export;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The operator's scenarios, run in-process against a real kube-apiserver, etcd and controller
 * manager (garbage collector, StatefulSet controller) by {@link NbdExportOperatorIT} as cluster
 * admin and by {@code NbdExportOperatorRbacIT} as the chart's ServiceAccount. The tests play
 * scheduler and kubelet for server pods with {@link LocalPodRunner}, then connect with real NBD
 * clients using the generated PSK. The tests' own client is always the admin's.
 */
@ExtendWith(KubeTestClusterExtension.class)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
abstract class OperatorScenarios {
    private static final Duration RECONCILED = Duration.ofSeconds(30);
    private static KubeTestCluster cluster;
    private static KubernetesClient client;
    private static KubeNbdOperator operator;
    private static int controlPort;
    /** Where the operator keeps the control API's CA. */
    private static String caNamespace;

    /** The client the operator runs with: the cluster admin, or a ServiceAccount with only the chart's RBAC. */
    abstract KubernetesClient operatorClient(KubeTestCluster cluster) throws Exception;

    /** Where the operator takes its Lease, or null to run without leader election. */
    abstract String leaseNamespace(KubeTestCluster cluster);

    /** The namespaces the operator watches (known once {@link #operatorClient} ran); empty for all. */
    /** The labels the chart's operator pods carry that its NetworkPolicies select. */
    static final Map<String, String> OPERATOR_POD_LABELS = Map.of("app.kubernetes.io/component", "operator");

    Set<String> watchedNamespaces() {
        return Set.of();
    }

    /** A namespace of its own for one scenario, which the operator watches. */
    String scenarioNamespace(KubeTestCluster cluster, String prefix) {
        return cluster.createNamespace(prefix);
    }

    @BeforeAll
    void startOperator(KubeTestCluster testCluster) throws Exception {
        cluster = testCluster;
        client = cluster.client();
        OperatorTestBed.installCrds(cluster);
        controlPort = OperatorTestBed.freePort();
        caNamespace = leaseNamespace(cluster) != null ? leaseNamespace(cluster) : cluster.createNamespace("operator");
        KubernetesClient operatorClient = operatorClient(cluster);
        // As the chart runs it: watching every namespace, the operator fences each server's control port itself.
        ControlNetworkPolicy controlPolicy = watchedNamespaces().isEmpty()
                ? new ControlNetworkPolicy(caNamespace, OPERATOR_POD_LABELS) : null;
        operator = KubeNbdOperator.start(operatorClient, new OperatorOptions(watchedNamespaces(),
                new ServerSettings("kube-nbd:test", "Never", controlPort, ServerSettings.DEFAULT_JAVA_OPTIONS, controlPolicy),
                leaseNamespace(cluster), OperatorOptions.DEFAULT_LEASE_NAME, "it", "127.0.0.1", 0, 4, false, caNamespace));
    }

    @AfterAll
    void stopOperator() {
        if (operator != null) {
            operator.close();
        }
    }

    private static String exportYaml(String name, int port, String extraSpec) {
        return OperatorTestBed.exportYaml(name, name, "service: {port: %d}\n".formatted(port) + extraSpec);
    }

    @Test
    void exportGetsSecretServerServiceAndVolumeAndServesOverTlsPsk(@TempDir Path work) throws Exception {
        String ns = scenarioNamespace(cluster, "serve");
        int port = OperatorTestBed.freePort();
        createClaim(client, ns, "disk", "Filesystem");
        NbdExport created = createExport(client, ns, exportYaml("disk", port, """
                persistentVolume: {create: true, claimRef: {namespace: %s, name: vm-disk}}
                dirtyBitmaps: [{name: backup}]
                metaContexts: [base:allocation]
                maxConnections: 4""".formatted(ns)));

        // Dependents appear before any pod runs.
        Secret secret = Await.until("PSK Secret", RECONCILED,
                () -> client.secrets().inNamespace(ns).withName("disk-psk").get(), s -> true);
        String pskLine = new String(Base64.getDecoder().decode(secret.getData().get("keys.psk")), StandardCharsets.US_ASCII);
        assertThat(pskLine).matches("kube-nbd:[0-9a-f]{64}\n");
        StatefulSet sts = Await.until("StatefulSet", RECONCILED,
                () -> client.apps().statefulSets().inNamespace(ns).withName("disk-nbd").get(), s -> true);
        assertThat(sts.getSpec().getReplicas()).isEqualTo(1);
        assertThat(sts.getMetadata().getOwnerReferences()).singleElement()
                .satisfies(o -> assertThat(o.getUid()).isEqualTo(created.getMetadata().getUid()));
        Service service = client.services().inNamespace(ns).withName("disk").get();
        assertThat(service.getSpec().getPorts()).singleElement().satisfies(p -> assertThat(p.getPort()).isEqualTo(port));
        NetworkPolicy policy = client.network().v1().networkPolicies().inNamespace(ns).withName("disk-control").get();
        if (watchedNamespaces().isEmpty()) {
            assertThat(policy).as("the operator's NetworkPolicy for the control port").isNotNull();
            assertThat(policy.getSpec().getPodSelector().getMatchLabels()).isEqualTo(sts.getSpec().getSelector().getMatchLabels());
            assertThat(policy.getSpec().getIngress()).hasSize(2);
            assertThat(policy.getSpec().getIngress().getFirst()).satisfies(rule -> {
                assertThat(rule.getPorts()).singleElement().satisfies(p -> assertThat(p.getPort().getIntVal()).isEqualTo(controlPort));
                assertThat(rule.getFrom()).singleElement().satisfies(peer -> {
                    assertThat(peer.getNamespaceSelector().getMatchLabels()).containsExactly(
                            Map.entry("kubernetes.io/metadata.name", caNamespace));
                    assertThat(peer.getPodSelector().getMatchLabels()).isEqualTo(OPERATOR_POD_LABELS);
                });
            });
            assertThat(policy.getSpec().getIngress().get(1)).satisfies(rule -> {
                assertThat(rule.getPorts()).singleElement().satisfies(p -> assertThat(p.getPort().getStrVal()).isEqualTo("nbd"));
                assertThat(rule.getFrom()).as("NBD as open as without a policy").isEmpty();
            });
        } else {
            assertThat(policy).as("no NetworkPolicy of the operator's where the chart fences the namespace").isNull();
        }
        PersistentVolume pv = OperatorTestBed.awaitPersistentVolume(client, ns, "disk", RECONCILED);
        assertThat(pv.getMetadata().getName()).isEqualTo("nbdexport-" + created.getMetadata().getUid());
        assertThat(pv.getSpec().getCsi().getDriver()).isEqualTo("nbd.csi.kubenbd.io");
        assertThat(pv.getSpec().getCsi().getVolumeAttributes()).containsEntry("host", "disk." + ns + ".svc")
                .containsEntry("port", Integer.toString(port)).containsEntry("exportName", "disk")
                .containsEntry("connections", "4").containsEntry("tlsMode", "psk");
        assertThat(pv.getSpec().getCsi().getNodeStageSecretRef().getName()).isEqualTo("disk-psk");
        assertThat(pv.getSpec().getCapacity().get("storage").toString()).isEqualTo("64Mi");
        assertThat(pv.getSpec().getClaimRef().getNamespace() + "/" + pv.getSpec().getClaimRef().getName())
                .as("bound in advance to the named consumer claim").isEqualTo(ns + "/vm-disk");
        NbdExport pending = awaitPhase(client, ns, "disk", "Pending", RECONCILED);
        assertThat(pending.getStatus().condition("Ready").getReason()).isIn("ServerPodPending", "ServerUnscheduled");
        assertThat(pending.getStatus().endpoint().uri()).isEqualTo("nbds://disk." + ns + ".svc:" + port + "/disk");

        // Play the node: run exactly what the pod spec says.
        OperatorTestBed.image(work.resolve("pvc"), "disk.img", 64 << 20);
        try (LocalPodRunner server = OperatorTestBed.runServer(client, awaitServerPod(client, ns, created), "127.0.0.11",
                work.resolve("node"), Map.of("disk", work.resolve("pvc")))) {
            assertThat(server.alive()).as("server log:\n%s", server.log()).isTrue();
            NbdExport serving = awaitPhase(client, ns, "disk", "Serving", RECONCILED);
            assertThat(serving.getStatus().node()).isEqualTo(LocalPodRunner.NODE);
            assertThat(serving.getStatus().observedGeneration()).isEqualTo(serving.getMetadata().getGeneration());
            assertThat(serving.getStatus().condition("Ready").getStatus()).isEqualTo("True");
            NbdExport synced = Await.until("bitmap backup recording", RECONCILED, () -> export(client, ns, "disk"),
                    e -> e.getStatus().dirtyBitmaps().stream().anyMatch(b -> b.name().equals("backup") && "recording".equals(b.state())));
            assertThat(synced.getStatus().condition("BitmapsSynced").getStatus()).isEqualTo("True");
            assertControlApiNeedsTheOperatorsCertificate(ns, "disk", server);

            Path pskFile = work.resolve("keys.psk");
            Files.writeString(pskFile, pskLine);
            String uri = "nbds://kube-nbd@127.0.0.11:" + port + "/disk?tls-psk-file=" + pskFile;
            var info = PeerCommand.run(Duration.ofSeconds(30), "nbdinfo", "--json", uri);
            assertThat(info.exitCode()).as(info.output()).isZero();
            assertThat(info.output()).contains("\"export-size\": " + (64 << 20)).contains("\"can_multi_conn\": true")
                    .contains("qemu:dirty-bitmap:backup").contains("base:allocation").doesNotContain("qemu:allocation-depth");
            Path copy = work.resolve("copy.img");
            var nbdcopy = PeerCommand.run(Duration.ofSeconds(60), "nbdcopy", uri, copy.toString());
            assertThat(nbdcopy.exitCode()).as(nbdcopy.output()).isZero();
            assertThat(Files.mismatch(copy, work.resolve("pvc/disk.img"))).isEqualTo(-1L);
            var plaintext = PeerCommand.run(Duration.ofSeconds(30), "nbdinfo", "nbd://127.0.0.11:" + port + "/disk");
            assertThat(plaintext.exitCode()).as("TLS is required").isNotZero();

            // Bitmaps change through the control API: same server process, no new StatefulSet revision.
            long generation = client.apps().statefulSets().inNamespace(ns).withName("disk-nbd").get().getMetadata().getGeneration();
            mergePatch(ns, "disk", "{\"spec\":{\"dirtyBitmaps\":[]}}");
            Await.until("bitmap list applied", RECONCILED, () -> export(client, ns, "disk"),
                    e -> e.getStatus().dirtyBitmaps().isEmpty() && e.getStatus().observedGeneration() == e.getMetadata().getGeneration());
            var after = PeerCommand.run(Duration.ofSeconds(30), "nbdinfo", "--list", uri);
            assertThat(after.output()).doesNotContain("qemu:dirty-bitmap:backup");
            assertThat(server.alive()).isTrue();
            assertThat(client.apps().statefulSets().inNamespace(ns).withName("disk-nbd").get().getMetadata().getGeneration())
                    .isEqualTo(generation);

            // Metrics count the export as serving.
            var metrics = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                    URI.create("http://127.0.0.1:" + operator.httpPort() + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(metrics.body()).containsPattern("kubenbd_exports\\{phase=\"Serving\"\\} [1-9]");
            assertThat(client.v1().events().inNamespace(ns).list().getItems())
                    .anySatisfy(ev -> assertThat(ev.getReason()).isEqualTo("Serving"));
        }
    }

    /**
     * The bitmaps above went through the control API with the operator's client certificate; nobody
     * else gets in: the server's control port refuses plaintext, and the CA's key stays in the
     * operator's namespace (the export's namespace gets only the server's certificate and key and the CA certificate).
     */
    private static void assertControlApiNeedsTheOperatorsCertificate(String ns, String name, LocalPodRunner server) throws Exception {
        assertThat(server.commandLine()).contains("--control-tls-cert", "--control-tls-key", "--control-tls-ca");
        Secret ca = client.secrets().inNamespace(caNamespace).withName("kube-nbd-control-ca").get();
        assertThat(ca.getData()).containsKeys("ca.crt", "ca.key");
        Secret serverTls = client.secrets().inNamespace(ns).withName(name + "-control-tls").get();
        assertThat(serverTls.getType()).isEqualTo("kubernetes.io/tls");
        assertThat(serverTls.getData()).containsOnlyKeys("ca.crt", "tls.crt", "tls.key");
        assertThat(serverTls.getData().get("ca.crt")).isEqualTo(ca.getData().get("ca.crt"));
        assertThat(serverTls.getMetadata().getOwnerReferences()).singleElement()
                .satisfies(o -> assertThat(o.getKind()).isEqualTo("NbdExport"));
        ManagedChannel plaintext = Grpc.newChannelBuilderForAddress("127.0.0.11", controlPort,
                InsecureChannelCredentials.create()).build();
        try {
            assertThatThrownBy(() -> ExportControlGrpc.newBlockingStub(plaintext).withDeadlineAfter(10, TimeUnit.SECONDS)
                    .listExports(ListExportsRequest.getDefaultInstance()))
                    .as("a plaintext call to the server's control API").isInstanceOf(StatusRuntimeException.class);
        } finally {
            plaintext.shutdownNow();
        }
        assertThat(server.log()).doesNotContain("PRIVATE KEY");
    }

    @Test
    void invalidSpecsAreRejectedByTheApiServerWithTheSchemaMessage() {
        String ns = scenarioNamespace(cluster, "invalid");
        Map<String, String> cases = Map.of(
                "tls: {mode: x509}", "tls.mode x509 needs tls.secretName",
                "maxConnections: 0", "spec.maxConnections in body should be greater than or equal to 1",
                "dirtyBitmaps: [{name: a, granularity: 1000}]", "granularity must be a power of two",
                "dirtyBitmaps: [{name: a}, {name: a}]", "each name may appear only once",
                "tls: {mode: rsa}", "Unsupported value: \"rsa\"");
        cases.forEach((spec, message) -> assertThatThrownBy(() -> createExport(client, ns, exportYaml("bad", 10809, spec)))
                .as(spec).isInstanceOf(KubernetesClientException.class).hasMessageContaining(message));
        assertThatThrownBy(() -> createExport(client, ns, exportYaml("bad", 70000, "")))
                .hasMessageContaining("spec.service.port in body should be less than or equal to 65535");
        assertThatThrownBy(() -> createExport(client, ns, exportYaml("bad", 10809, "").replace("disk.img", "../../etc/shadow")))
                .hasMessageContaining("must be a relative path inside the volume");

        createExport(client, ns, exportYaml("good", 10809, ""));
        assertThatThrownBy(() -> mergePatch(ns, "good", "{\"spec\":{\"source\":{\"imagePath\":\"other.img\"}}}"))
                .hasMessageContaining("spec.source is immutable");
    }

    @Test
    void blockVolumeIsExportedWholeWithItsBitmapsInTheStateDir(@TempDir Path work) throws Exception {
        String ns = scenarioNamespace(cluster, "block");
        int port = OperatorTestBed.freePort();
        createClaim(client, ns, "raw", "Block");
        NbdExport export = createExport(client, ns, """
                apiVersion: kubenbd.io/v1alpha1
                kind: NbdExport
                metadata: {name: raw}
                spec:
                  source: {persistentVolumeClaim: raw}
                  service: {port: %d}
                  dirtyBitmaps: [{name: nightly, granularity: 1048576}]
                """.formatted(port));
        // The device node of the Block PVC is played by a file; the server reads either the same way.
        Path device = OperatorTestBed.image(work.resolve("dev"), "volume", 32 << 20);
        try (LocalPodRunner server = OperatorTestBed.runServer(client, awaitServerPod(client, ns, export), "127.0.0.13",
                work.resolve("node"), Map.of("raw", device))) {
            assertThat(Files.readString(work.resolve("node/volumes/config/serve.yaml")))
                    .contains("path: \"" + device + "\"").contains("max-connections: 8");
            assertThat(server.commandLine()).contains(work.resolve("node/volumes/state").toString());
            NbdExport serving = Await.until("block export serving with its bitmap", RECONCILED, () -> export(client, ns, "raw"),
                    e -> e.getStatus() != null && e.getStatus().phase() != null && "Serving".equals(e.getStatus().phase().name())
                            && e.getStatus().dirtyBitmaps().stream().anyMatch(b -> b.granularity() == 1 << 20));
            assertThat(serving.getStatus().condition("VolumeReady").getReason()).isEqualTo("BlockVolume");
            assertThat(work.resolve("node/volumes/state/export-raw.bitmaps")).isDirectory();
            var healthz = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                    URI.create("http://127.0.0.1:" + operator.httpPort() + "/healthz")).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(healthz.statusCode()).isEqualTo(200);
        }
    }

    @Test
    void missingClaimIsReportedAndTheExportStartsWhenItAppears() {
        String ns = scenarioNamespace(cluster, "noclaim");
        createExport(client, ns, exportYaml("late", 10809, ""));
        NbdExport pending = awaitPhase(client, ns, "late", "Pending", RECONCILED);
        assertThat(pending.getStatus().condition("Ready").getReason()).isEqualTo("PersistentVolumeClaimNotFound");
        assertThat(pending.getStatus().condition("Ready").getMessage())
                .isEqualTo("PersistentVolumeClaim late not found in namespace " + ns + "; the server starts once it exists");
        assertThat(client.apps().statefulSets().inNamespace(ns).withName("late-nbd").get()).isNull();
        assertThat(client.v1().events().inNamespace(ns).list().getItems())
                .anySatisfy(ev -> assertThat(ev.getReason() + "/" + ev.getType()).isEqualTo("PersistentVolumeClaimNotFound/Warning"));

        createClaim(client, ns, "late", "Filesystem");
        Await.until("StatefulSet after the PVC appeared", RECONCILED,
                () -> client.apps().statefulSets().inNamespace(ns).withName("late-nbd").get(), s -> true);
        Await.until("Ready reason past the PVC", RECONCILED, () -> export(client, ns, "late"),
                e -> !"PersistentVolumeClaimNotFound".equals(e.getStatus().condition("Ready").getReason()));
    }

    @Test
    void volumeModeMustFitImagePathAndASecondWriterIsRefused() {
        String ns = scenarioNamespace(cluster, "fit");
        createClaim(client, ns, "raw", "Block");
        createExport(client, ns, exportYaml("raw", 10809, ""));
        NbdExport wrong = awaitPhase(client, ns, "raw", "Failed", RECONCILED);
        assertThat(wrong.getStatus().condition("Ready").getReason()).isEqualTo("ImagePathNotAllowed");

        createClaim(client, ns, "disk", "Filesystem");
        createExport(client, ns, exportYaml("disk", 10809, ""));
        Await.until("first export's StatefulSet", RECONCILED,
                () -> client.apps().statefulSets().inNamespace(ns).withName("disk-nbd").get(), s -> true);
        createExport(client, ns, exportYaml("second", 10809, "").replace("persistentVolumeClaim: second", "persistentVolumeClaim: disk"));
        NbdExport second = awaitPhase(client, ns, "second", "Failed", RECONCILED);
        assertThat(second.getStatus().condition("Ready").getReason()).isEqualTo("VolumeInUse");
        assertThat(second.getStatus().condition("Ready").getMessage()).contains("already exported by NbdExport disk");
        assertThat(client.apps().statefulSets().inNamespace(ns).withName("second-nbd").get()).isNull();
    }

    @Test
    void badImagePathFailsWithTheServersMessageAndARestartingSpecChangeSaysSo(@TempDir Path work) throws Exception {
        String ns = scenarioNamespace(cluster, "badpath");
        int port = OperatorTestBed.freePort();
        createClaim(client, ns, "vm", "Filesystem");
        NbdExport export = createExport(client, ns, exportYaml("vm", port, "").replace("disk.img", "missing.img"));
        Files.createDirectories(work.resolve("pvc"));
        try (LocalPodRunner server = OperatorTestBed.runServer(client, awaitServerPod(client, ns, export), "127.0.0.12",
                work.resolve("node"), Map.of("vm", work.resolve("pvc")))) {
            assertThat(server.alive()).isFalse();
            NbdExport failed = awaitPhase(client, ns, "vm", "Failed", RECONCILED);
            assertThat(failed.getStatus().condition("Ready").getReason()).isEqualTo("ServerFailing");
            assertThat(failed.getStatus().condition("Ready").getMessage()).contains("server exited with code").contains("missing.img");
        }

        // A change the server cannot take at run time rolls the pod; status says so until the new one runs.
        long before = client.apps().statefulSets().inNamespace(ns).withName("vm-nbd").get().getMetadata().getGeneration();
        mergePatch(ns, "vm", "{\"spec\":{\"readOnly\":true}}");
        StatefulSet rolled = Await.until("new StatefulSet template", RECONCILED,
                () -> client.apps().statefulSets().inNamespace(ns).withName("vm-nbd").get(),
                s -> s.getMetadata().getGeneration() > before);
        assertThat(rolled.getSpec().getTemplate().getMetadata().getAnnotations().get(ServerPodTemplate.CONFIG_ANNOTATION))
                .contains("path: \"/data/missing.img\"").contains("readonly: true");
        Await.until("Ready reason ServerRestarting", RECONCILED, () -> export(client, ns, "vm"),
                e -> "ServerRestarting".equals(e.getStatus().condition("Ready").getReason()));
    }

    @Test
    void deletedDependentsComeBackAndDeletingTheExportRemovesEverything() {
        String ns = scenarioNamespace(cluster, "gc");
        createClaim(client, ns, "data", "Filesystem");
        NbdExport export = createExport(client, ns, exportYaml("data", 10809, "persistentVolume: {create: true}"));
        Service service = Await.until("Service", RECONCILED, () -> client.services().inNamespace(ns).withName("data").get(), s -> true);
        Secret secret = Await.until("Secret", RECONCILED, () -> client.secrets().inNamespace(ns).withName("data-psk").get(), s -> true);
        String pvName = OperatorTestBed.awaitPersistentVolume(client, ns, "data", RECONCILED).getMetadata().getName();

        client.services().inNamespace(ns).withName("data").delete();
        client.secrets().inNamespace(ns).withName("data-psk").delete();
        Service recreated = Await.until("Service recreated", RECONCILED, () -> client.services().inNamespace(ns).withName("data").get(),
                s -> !s.getMetadata().getUid().equals(service.getMetadata().getUid()));
        assertThat(recreated.getSpec().getPorts().getFirst().getPort()).isEqualTo(10809);
        Secret newSecret = Await.until("Secret recreated", RECONCILED, () -> client.secrets().inNamespace(ns).withName("data-psk").get(),
                s -> !s.getMetadata().getUid().equals(secret.getMetadata().getUid()));
        assertThat(newSecret.getData().get("keys.psk")).as("a new random key").isNotEqualTo(secret.getData().get("keys.psk"));

        client.resources(NbdExport.class).inNamespace(ns).withName("data").delete();
        Await.until("PersistentVolume deleted by the operator", RECONCILED,
                () -> client.persistentVolumes().withName(pvName).get() == null, gone -> gone);
        // The garbage collector learns the CRD's kind on its discovery resync (every 30 s), hence the longer wait.
        Await.until("owned objects garbage-collected", Duration.ofSeconds(90), () ->
                client.apps().statefulSets().inNamespace(ns).withName("data-nbd").get() == null
                        && client.services().inNamespace(ns).withName("data").get() == null
                        && client.secrets().inNamespace(ns).withName("data-psk").get() == null
                        && export(client, ns, "data") == null, gone -> gone);
        assertThat(export.getMetadata().getUid()).isNotNull();
    }

    private static NbdExport mergePatch(String ns, String name, String json) {
        return client.resources(NbdExport.class).inNamespace(ns).withName(name)
                .patch(PatchContext.of(PatchType.JSON_MERGE), json);
    }
}
