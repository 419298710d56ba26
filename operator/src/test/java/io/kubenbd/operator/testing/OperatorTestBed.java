package io.kubenbd.operator.testing;

import io.fabric8.kubernetes.api.model.GenericKubernetesResource;
import io.fabric8.kubernetes.api.model.PersistentVolume;
import io.fabric8.kubernetes.api.model.PersistentVolumeClaim;
import io.fabric8.kubernetes.api.model.PersistentVolumeClaimBuilder;
import io.fabric8.kubernetes.api.model.Pod;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.apiextensions.v1.CustomResourceDefinition;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.reconciler.ExportResources;
import io.kubenbd.operator.reconciler.ServerPodTemplate;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

/**
 * What the operator tests share: installing {@code crds/} into the test cluster, PVCs, NbdExports
 * from YAML, free ports, and running a server pod with the packaged {@code nbd-node.jar}.
 */
public final class OperatorTestBed {
    public static final Path CRD = Path.of("..", "crds", "nbdexports.kubenbd.io-v1.yml");
    public static final Path NBD_NODE_JAR = Path.of("..", "nbd-node", "target", "nbd-node.jar").toAbsolutePath().normalize();

    private OperatorTestBed() {}

    /** Applies the committed CRD and waits until the API server serves it. */
    public static void installCrds(KubeTestCluster cluster) {
        cluster.applyYaml(CRD);
        Await.until("CRD nbdexports.kubenbd.io established", Duration.ofSeconds(30),
                () -> cluster.client().apiextensions().v1().customResourceDefinitions().withName("nbdexports.kubenbd.io").get(),
                (CustomResourceDefinition crd) -> crd.getStatus() != null && crd.getStatus().getConditions().stream()
                        .anyMatch(c -> "Established".equals(c.getType()) && "True".equals(c.getStatus())));
    }

    public static int freePort() {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    public static PersistentVolumeClaim createClaim(KubernetesClient client, String namespace, String name, String volumeMode) {
        return client.persistentVolumeClaims().inNamespace(namespace).resource(new PersistentVolumeClaimBuilder()
                .withNewMetadata().withName(name).endMetadata()
                .withNewSpec().withAccessModes("ReadWriteOnce").withVolumeMode(volumeMode)
                .withNewResources().withRequests(Map.of("storage", new Quantity("64Mi"))).endResources()
                .endSpec().build()).create();
    }

    /** An NbdExport of {@code disk.img} on the Filesystem PVC {@code claim}, with more spec lines (YAML, not indented). */
    public static String exportYaml(String name, String claim, String extraSpec) {
        return """
                apiVersion: kubenbd.io/v1alpha1
                kind: NbdExport
                metadata: {name: %s}
                spec:
                  source: {persistentVolumeClaim: %s, imagePath: disk.img}
                %s""".formatted(name, claim, extraSpec.indent(2));
    }

    /** Sends the YAML as it is (untyped), so that values the Java model cannot hold reach the API server's validation. */
    public static NbdExport createExport(KubernetesClient client, String namespace, String yaml) {
        var resource = client.getKubernetesSerialization().unmarshal(yaml, GenericKubernetesResource.class);
        client.genericKubernetesResources(NbdExport.GROUP + "/" + NbdExport.VERSION, "NbdExport")
                .inNamespace(namespace).resource(resource).create();
        return export(client, namespace, resource.getMetadata().getName());
    }

    public static NbdExport export(KubernetesClient client, String namespace, String name) {
        return client.resources(NbdExport.class).inNamespace(namespace).withName(name).get();
    }

    public static NbdExport awaitPhase(KubernetesClient client, String namespace, String name, String phase, Duration timeout) {
        return Await.until("NbdExport " + name + " in phase " + phase, timeout, () -> export(client, namespace, name),
                e -> e.getStatus() != null && e.getStatus().phase() != null && phase.equals(e.getStatus().phase().name()));
    }

    /** The PersistentVolume the operator wrote for an export, by the name in its status. */
    public static PersistentVolume awaitPersistentVolume(KubernetesClient client, String namespace, String name, Duration timeout) {
        NbdExport export = Await.until("status.persistentVolume of NbdExport " + namespace + "/" + name, timeout,
                () -> export(client, namespace, name), e -> e.getStatus() != null && e.getStatus().persistentVolume() != null);
        return Await.until("PersistentVolume " + export.getStatus().persistentVolume(), timeout,
                () -> client.persistentVolumes().withName(export.getStatus().persistentVolume()).get(), pv -> true);
    }

    /** The server pod, once the StatefulSet controller has made it. */
    public static Pod awaitServerPod(KubernetesClient client, String namespace, NbdExport export) {
        String name = ExportResources.serverPodName(export);
        return Await.until("server pod " + name, Duration.ofSeconds(30),
                () -> client.pods().inNamespace(namespace).withName(name).get(),
                pod -> pod.getMetadata().getDeletionTimestamp() == null);
    }

    /** Runs the server pod's container locally with the packaged jar standing in for the image's launcher. */
    public static LocalPodRunner runServer(KubernetesClient client, Pod pod, String podIp, Path workDir,
                                           Map<String, Path> claims) throws IOException {
        if (!Files.isRegularFile(NBD_NODE_JAR)) {
            throw new AssertionError(NBD_NODE_JAR + " is missing: the operator's integration tests run after nbd-node is packaged");
        }
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        return LocalPodRunner.start(client, pod, podIp, workDir, claims,
                Map.of(ServerPodTemplate.COMMAND, List.of(java, "-jar", NBD_NODE_JAR.toString())));
    }

    /** A sparse image of {@code size} bytes whose first MiB holds a known pattern. */
    public static Path image(Path directory, String name, long size) throws IOException {
        Files.createDirectories(directory);
        Path image = directory.resolve(name);
        byte[] head = new byte[1 << 20];
        for (int i = 0; i < head.length; i++) {
            head[i] = (byte) (i * 31 + 7);
        }
        try (var channel = java.nio.channels.FileChannel.open(image, java.nio.file.StandardOpenOption.CREATE,
                java.nio.file.StandardOpenOption.WRITE)) {
            channel.write(java.nio.ByteBuffer.wrap(head), 0);
            channel.truncate(size);
            if (channel.size() < size) {
                channel.write(java.nio.ByteBuffer.wrap(new byte[1]), size - 1);
            }
        }
        return image;
    }
}
