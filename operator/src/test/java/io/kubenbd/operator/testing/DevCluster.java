package io.kubenbd.operator.testing;

import io.fabric8.kubernetes.api.model.NamespaceBuilder;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.reconciler.ExportResources;
import io.kubenbd.operator.reconciler.ServerSettings;
import io.kubenbd.operator.runtime.KubeNbdOperator;
import io.kubenbd.operator.runtime.OperatorOptions;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Base64;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;

/**
 * The local development cluster behind {@code scripts/dev-cluster.sh}: a real kube-apiserver,
 * etcd and controller manager on loopback, the CRDs, the operator in this JVM, and
 * {@code examples/nbdexport.yaml} over a sparse 1 GiB image whose server pod is run here (as the
 * tests do, with {@link LocalPodRunner}). It prints the endpoint, the PSK file and the commands
 * that read the export, then runs until Ctrl-C, which stops everything it started. With
 * {@code --check} it reads the export with nbdinfo itself and exits (non-zero on failure).
 */
public final class DevCluster {
    private static final String NAMESPACE = "demo";
    private static final String POD_IP = "127.0.0.2";

    private DevCluster() {}

    public static void main(String[] args) throws Exception {
        // Ctrl-C runs shutdown hooks, not the finally blocks of a waiting main thread: the hook wakes
        // main and waits for it to stop the server, the operator and the cluster in order.
        CountDownLatch interrupted = new CountDownLatch(1);
        CountDownLatch cleanedUp = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            interrupted.countDown();
            try {
                cleanedUp.await(60, java.util.concurrent.TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));
        try {
            run(args, interrupted);
        } finally {
            cleanedUp.countDown();
        }
    }

    private static void run(String[] args, CountDownLatch interrupted) throws Exception {
        boolean check = args.length > 0 && args[0].equals("--check");
        Path work = Files.createTempDirectory(Path.of("/dev/shm").toFile().isDirectory() ? Path.of("/dev/shm") : Path.of("/tmp"),
                "kube-nbd-dev-");
        Path local = Files.createTempDirectory("kube-nbd-dev-node-");
        System.out.println("starting etcd, kube-apiserver and kube-controller-manager ...");
        try (KubeTestCluster cluster = KubeTestCluster.start(work.resolve("cluster"))) {
            KubernetesClient client = cluster.client();
            OperatorTestBed.installCrds(cluster);
            try (KubeNbdOperator operator = KubeNbdOperator.start(client, new OperatorOptions(Set.of(),
                    ServerSettings.defaults(), null, OperatorOptions.DEFAULT_LEASE_NAME, "dev", "127.0.0.1", 0, 4, false, "default"))) {
                client.namespaces().resource(new NamespaceBuilder().withNewMetadata().withName(NAMESPACE).endMetadata().build()).create();
                Await.until("ServiceAccount demo/default", Duration.ofSeconds(30),
                        () -> client.serviceAccounts().inNamespace(NAMESPACE).withName("default").get(), sa -> true);
                OperatorTestBed.createClaim(client, NAMESPACE, "vm-disk", "Filesystem");
                Path volume = local.resolve("pvc-vm-disk");
                OperatorTestBed.image(volume, "disk.img", 1L << 30);
                cluster.applyYaml(Path.of("..", "examples", "nbdexport.yaml"));
                NbdExport export = OperatorTestBed.export(client, NAMESPACE, "vm-disk");
                try (LocalPodRunner server = OperatorTestBed.runServer(client, OperatorTestBed.awaitServerPod(client, NAMESPACE, export),
                        POD_IP, local.resolve("node"), Map.of("vm-disk", volume))) {
                    NbdExport serving = OperatorTestBed.awaitPhase(client, NAMESPACE, "vm-disk", "Serving", Duration.ofSeconds(60));
                    int port = serving.getSpec().serviceOrDefault().portOrDefault();
                    Path pskDir = local.resolve("psk");
                    Files.createDirectories(pskDir);
                    String psk = new String(Base64.getDecoder().decode(client.secrets().inNamespace(NAMESPACE)
                            .withName(serving.getStatus().endpoint().pskSecret()).get().getData().get(ExportResources.PSK_KEY)),
                            StandardCharsets.US_ASCII);
                    Path pskFile = Files.writeString(pskDir.resolve("keys.psk"), psk);
                    String identity = serving.getStatus().endpoint().pskIdentity();
                    String uri = "nbds://" + identity + "@" + POD_IP + ":" + port + "/" + serving.exportName() + "?tls-psk-file=" + pskFile;
                    System.out.printf("""

                            NbdExport %s/vm-disk is %s on node %s (server pid %d, image %s)
                              endpoint in the cluster: %s
                              PSK Secret %s, written to %s (identity %s)
                              kubeconfig: %s   operator metrics: http://127.0.0.1:%d/metrics

                            Read it:
                              nbdinfo '%s'
                              qemu-img info --object tls-creds-psk,id=tls0,endpoint=client,dir=%s,username=%s \\
                                  --image-opts driver=nbd,host=%s,port=%d,export=vm-disk,tls-creds=tls0
                            %n""", NAMESPACE, serving.getStatus().phase(), serving.getStatus().node(), server.pid(), volume.resolve("disk.img"),
                            serving.getStatus().endpoint().uri(), serving.getStatus().endpoint().pskSecret(), pskFile, identity,
                            cluster.kubeconfig(), operator.httpPort(), uri, pskDir, identity, POD_IP, port);
                    if (check) {
                        var info = PeerCommand.run(Duration.ofSeconds(30), "nbdinfo", uri);
                        System.out.println(info.output());
                        if (info.exitCode() != 0 || !info.output().contains("export-size: 1073741824")) {
                            throw new IllegalStateException("nbdinfo could not read the export");
                        }
                        System.out.println("check passed: nbdinfo read the export over TLS-PSK");
                        return;
                    }
                    System.out.println("Ctrl-C stops the server, the operator and the cluster.");
                    interrupted.await();
                    System.out.println("stopping ...");
                }
            }
        } finally {
            deleteTree(local);
            deleteTree(work);
        }
    }

    private static void deleteTree(Path root) throws java.io.IOException {
        if (Files.exists(root)) {
            try (var paths = Files.walk(root)) {
                paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}
