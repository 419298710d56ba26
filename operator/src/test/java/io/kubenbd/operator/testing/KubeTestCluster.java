package io.kubenbd.operator.testing;

import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.NamespaceBuilder;
import io.fabric8.kubernetes.api.model.authorization.v1.ResourceAttributesBuilder;
import io.fabric8.kubernetes.api.model.authorization.v1.SubjectAccessReviewBuilder;
import io.fabric8.kubernetes.client.Config;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientBuilder;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/**
 * A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) on loopback, for
 * integration tests that need the behaviour of a real API server: validation of the generated
 * CRDs, server-side apply, RBAC, owner-reference garbage collection and StatefulSet pod creation.
 * A mock server would only replay what the test already assumes.
 *
 * <p>There is no scheduler and no kubelet: pods are created but stay {@code Pending}. The
 * controller manager runs only the controllers that need neither (listed in {@code CONTROLLERS}).
 * Deleting a namespace takes 5 to 10 s (the namespace controller waits a fixed 5 s before acting);
 * tests may as well leave their namespaces behind, the cluster is thrown away after the run.
 *
 * <p>The API server authorizes with RBAC, like a production cluster, so that tests can prove
 * least-privilege roles through {@link #clientAs}. The admin user is in {@code system:masters},
 * which RBAC lets do anything. Everything lives in the work directory, which {@link #close()}
 * deletes; each process logs to {@code <workDir>/<process>.log}.
 */
public final class KubeTestCluster implements AutoCloseable {

    private static final Duration READY_TIMEOUT = Duration.ofSeconds(60);
    private static final Duration POLL_INTERVAL = Duration.ofMillis(200);
    private static final String LOOPBACK = "127.0.0.1";
    private static final String ADMIN = "admin";

    /**
     * Controllers that work without a kubelet, scheduler or cloud: owner-reference garbage
     * collection, namespace deletion, the {@code default} ServiceAccount (pod admission rejects
     * pods in a namespace without it), StatefulSet and Deployment pod creation, and removal of the
     * protection finalizers that API server admission puts on every PVC and PV (without those
     * controllers a namespace holding a PVC never finishes deleting), and the attach/detach
     * controller, which makes VolumeAttachments for pods bound to nodes that let it manage their
     * attachments (annotation {@code volumes.kubernetes.io/controller-managed-attach-detach}) and
     * refuses a second node a ReadWriteOnce volume; it attaches only CSI volumes here, and only for
     * nodes that tests create with that annotation; the ClusterRole aggregation controller (the
     * built-in edit, admin and view roles take up rules of labelled ClusterRoles); and the PersistentVolume binder, which binds
     * claims to volumes exactly as a production cluster does (a pre-bound {@code claimRef}, a
     * claim's {@code volumeName}, or a free volume of the claim's class), so that tests can show
     * which claim can take which PersistentVolume. With no provisioner, a claim nothing matches
     * stays {@code Pending}.
     */
    private static final List<String> CONTROLLERS = List.of(
            "garbage-collector-controller",
            "namespace-controller",
            "serviceaccount-controller",
            "statefulset-controller",
            "deployment-controller",
            "replicaset-controller",
            "persistentvolumeclaim-protection-controller",
            "persistentvolume-protection-controller",
            "persistentvolume-attach-detach-controller",
            "persistentvolume-binder-controller",
            "clusterrole-aggregation-controller");

    private final Path workDir;
    private final List<LoggedProcess> processes;
    private final Thread shutdownHook;
    private final Path kubeconfig;
    private final String serverUrl;
    private final KubernetesClient client;
    private final AtomicBoolean closed = new AtomicBoolean();

    private KubeTestCluster(Path workDir, List<LoggedProcess> processes, Thread shutdownHook, Path kubeconfig,
            String serverUrl, KubernetesClient client) {
        this.workDir = workDir;
        this.processes = processes;
        this.shutdownHook = shutdownHook;
        this.kubeconfig = kubeconfig;
        this.serverUrl = serverUrl;
        this.client = client;
    }

    /**
     * Starts the control plane in {@code workDir} (created if needed; deleted by {@link #close()})
     * and waits, at most 60 s per step, until the API server is ready and the controller manager
     * works. Builds missing binaries first, see {@link KubeBinaries}. On failure the processes are
     * stopped, their logs are kept in the work directory, and the exception quotes their last lines.
     */
    public static KubeTestCluster start(Path workDir) {
        try {
            Files.createDirectories(workDir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create " + workDir, e);
        }
        KubeBinaries binaries = KubeBinaries.locate(workDir);
        List<LoggedProcess> processes = new CopyOnWriteArrayList<>();
        // Stops the processes if the JVM exits without close(), e.g. when a test run is cancelled;
        // otherwise they would outlive the JVM and keep their ports and memory.
        Thread shutdownHook = new Thread(() -> {
            stopAll(processes);
            deleteRecursively(workDir);
        }, "kube-test-cluster-shutdown");
        Runtime.getRuntime().addShutdownHook(shutdownHook);
        try {
            return boot(workDir, binaries, processes, shutdownHook);
        } catch (RuntimeException e) {
            stopAll(processes);
            Runtime.getRuntime().removeShutdownHook(shutdownHook);
            // The logs stay for a closer look than the quoted tails; etcd's data (a preallocated
            // 64 MB write-ahead log, held in memory under /dev/shm) goes.
            deleteRecursively(workDir.resolve("etcd"));
            throw e;
        }
    }

    private static KubeTestCluster boot(Path workDir, KubeBinaries binaries, List<LoggedProcess> processes,
            Thread shutdownHook) {
        int[] ports = freeLoopbackPorts(3);
        String etcdUrl = "http://" + LOOPBACK + ":" + ports[0];
        String etcdPeerUrl = "http://" + LOOPBACK + ":" + ports[1];
        String serverUrl = "https://" + LOOPBACK + ":" + ports[2];
        String token = HexFormat.of().formatHex(randomBytes(32));
        writeCredentials(workDir, token);

        processes.add(LoggedProcess.start("etcd", workDir, List.of(
                binaries.etcd().toString(),
                "--data-dir=" + workDir.resolve("etcd"),
                "--listen-client-urls=" + etcdUrl,
                "--advertise-client-urls=" + etcdUrl,
                "--listen-peer-urls=" + etcdPeerUrl,
                "--initial-advertise-peer-urls=" + etcdPeerUrl,
                "--initial-cluster=default=" + etcdPeerUrl,
                // Test data need not survive a power cut; fsync would make every write wait for the disk.
                "--unsafe-no-fsync")));
        processes.add(LoggedProcess.start("kube-apiserver", workDir, List.of(
                binaries.kubeApiserver().toString(),
                "--etcd-servers=" + etcdUrl,
                "--bind-address=" + LOOPBACK,
                "--advertise-address=" + LOOPBACK,
                "--secure-port=" + ports[2],
                // Without --tls-cert-file the API server writes a self-signed apiserver.crt here;
                // the kubeconfig trusts exactly that certificate.
                "--cert-dir=" + workDir.resolve("certs"),
                "--service-account-key-file=" + workDir.resolve("sa.pub"),
                "--service-account-signing-key-file=" + workDir.resolve("sa.key"),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--token-auth-file=" + workDir.resolve("tokens.csv"),
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16", // room for thousands of Services (the scale benchmark)
                // No kubelet will ever serve the kubernetes Service; do not publish endpoints for it.
                "--endpoint-reconciler-type=none",
                // As in real clusters (kubeadm sets it): CSI node plugins run privileged.
                "--allow-privileged=true")));
        Path servingCert = workDir.resolve("certs").resolve("apiserver.crt");
        awaitReady("kube-apiserver /readyz", processes, () -> readyz(serverUrl, token, servingCert));

        Path kubeconfig = writeKubeconfig(workDir, serverUrl, token, read(servingCert));
        processes.add(LoggedProcess.start("kube-controller-manager", workDir, List.of(
                binaries.kubeControllerManager().toString(),
                "--kubeconfig=" + kubeconfig,
                "--controllers=" + String.join(",", CONTROLLERS),
                "--leader-elect=false",
                // Nothing scrapes its metrics or health endpoints; not serving them saves a port.
                "--secure-port=0")));
        KubernetesClient client = new KubernetesClientBuilder().withConfig(loadConfig(kubeconfig)).build();
        try {
            // The serviceaccount controller creating default/default shows the controller manager
            // is connected and running controllers.
            awaitReady("the controller manager to create ServiceAccount default/default", processes,
                    () -> hasDefaultServiceAccount(client, "default"));
        } catch (RuntimeException e) {
            client.close();
            throw e;
        }
        return new KubeTestCluster(workDir, processes, shutdownHook, kubeconfig, serverUrl, client);
    }

    /** The admin client (user {@code admin} in group {@code system:masters}); closed by {@link #close()}. */
    public KubernetesClient client() {
        return client;
    }

    /**
     * A new admin {@link Config}, read from {@link #kubeconfig()} just as a child JVM would read
     * it; a copy each call, so callers may change it (for an operator under test, say).
     */
    public Config config() {
        return loadConfig(kubeconfig);
    }

    /**
     * The admin kubeconfig file, trusting the API server's certificate and authenticating with a
     * bearer token; for kubectl-like tools and child JVMs ({@code KUBECONFIG=...}).
     */
    public Path kubeconfig() {
        return kubeconfig;
    }

    /** {@code https://127.0.0.1:<port>}. */
    public String serverUrl() {
        return serverUrl;
    }

    /**
     * A new client that impersonates {@code user} in {@code groups}, so that a test sees what RBAC
     * lets that user do. The API server adds {@code system:authenticated}, and for a ServiceAccount
     * given no groups, {@code clientAs("system:serviceaccount:<ns>:<name>")}, also that
     * ServiceAccount's groups: the identity a pod running as it has. The caller closes the client.
     */
    public KubernetesClient clientAs(String user, String... groups) {
        Config config = config();
        config.setImpersonateUsername(user);
        config.setImpersonateGroups(groups);
        return new KubernetesClientBuilder().withConfig(config).build();
    }

    /**
     * Whether RBAC lets a ServiceAccount ({@code system:serviceaccount:<ns>:<name>}, with the groups the API server
     * gives it) do {@code verb} on {@code resource}, asked of the API server with a SubjectAccessReview.
     *
     * @param namespace null for cluster-scoped resources, or for the verb on all namespaces
     */
    public boolean serviceAccountMay(String serviceAccount, String verb, String group, String resource, String namespace) {
        String accountNamespace = serviceAccount.split(":")[2];
        return userMay(serviceAccount, List.of("system:serviceaccounts", "system:serviceaccounts:" + accountNamespace),
                verb, group, resource, namespace);
    }

    /** As {@link #serviceAccountMay} for any user in {@code groups} (and {@code system:authenticated}). */
    public boolean userMay(String user, List<String> groups, String verb, String group, String resource, String namespace) {
        List<String> allGroups = new ArrayList<>(groups);
        allGroups.add("system:authenticated");
        var review = client.authorization().v1().subjectAccessReview().create(new SubjectAccessReviewBuilder()
                .withNewSpec().withUser(user).withGroups(allGroups)
                .withResourceAttributes(new ResourceAttributesBuilder().withVerb(verb).withGroup(group).withResource(resource)
                        .withNamespace(namespace).build())
                .endSpec().build());
        return review.getStatus().getAllowed();
    }

    /**
     * Creates or updates every object of a multi-document YAML file with server-side apply,
     * taking over fields another manager owns, so that applying the same file twice is harmless.
     * Namespaced objects without a namespace go to {@code default}.
     *
     * @return the objects as the server stored them
     */
    public List<HasMetadata> applyYaml(Path file) {
        try (InputStream in = Files.newInputStream(file)) {
            return client.load(in).forceConflicts().serverSideApply();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file, e);
        }
    }

    /**
     * Creates a namespace named {@code <prefix>-<random>}, unique within the cluster so that tests
     * sharing it do not see each other's objects, and waits until its {@code default}
     * ServiceAccount exists: until then the API server rejects every pod created in it.
     *
     * @return the namespace name
     */
    public String createNamespace(String prefix) {
        String name = prefix + "-" + HexFormat.of().toHexDigits(ThreadLocalRandom.current().nextInt());
        client.namespaces().resource(new NamespaceBuilder().withNewMetadata().withName(name).endMetadata().build())
                .create();
        awaitReady("ServiceAccount " + name + "/default", processes, () -> hasDefaultServiceAccount(client, name));
        return name;
    }

    /**
     * Closes the admin client, stops the controller manager, API server and etcd in that order
     * (each by SIGTERM, SIGKILL after 10 s) and deletes the work directory. Idempotent.
     */
    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        client.close();
        stopAll(processes);
        try {
            Runtime.getRuntime().removeShutdownHook(shutdownHook);
        } catch (IllegalStateException e) {
            // The JVM is already shutting down; the hook is stopping the processes too, harmlessly.
        }
        deleteRecursively(workDir);
    }

    /** A readiness condition; an exception counts as "not yet" and is reported if time runs out. */
    @FunctionalInterface
    private interface Probe {
        boolean ready() throws Exception;
    }

    /**
     * Polls {@code probe} until it holds, failing fast if one of the processes exits and after
     * {@link #READY_TIMEOUT} otherwise, in both cases with the end of every process log.
     */
    private static void awaitReady(String what, List<LoggedProcess> processes, Probe probe) {
        long deadline = System.nanoTime() + READY_TIMEOUT.toNanos();
        Exception lastError = null;
        while (true) {
            for (LoggedProcess process : processes) {
                if (!process.isAlive()) {
                    throw failure(process.name() + " exited with code " + process.exitValue()
                            + " while waiting for " + what, processes, null);
                }
            }
            try {
                if (probe.ready()) {
                    return;
                }
                lastError = null;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw failure("interrupted while waiting for " + what, processes, e);
            } catch (Exception e) {
                lastError = e;
            }
            if (System.nanoTime() - deadline > 0) {
                throw failure(what + " not ready within " + READY_TIMEOUT.toSeconds() + " s", processes, lastError);
            }
            try {
                Thread.sleep(POLL_INTERVAL);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw failure("interrupted while waiting for " + what, processes, e);
            }
        }
    }

    private static IllegalStateException failure(String message, List<LoggedProcess> processes, Exception cause) {
        StringBuilder text = new StringBuilder("Kubernetes test cluster: ").append(message);
        if (cause != null) {
            text.append("\nlast error: ").append(cause);
        }
        for (LoggedProcess process : processes) {
            text.append('\n').append(process.logTail());
        }
        return new IllegalStateException(text.toString(), cause);
    }

    /**
     * Asks /readyz with the admin token (anonymous requests get 401) over TLS trusting only the
     * certificate the API server generated, which appears shortly after it starts.
     */
    private static boolean readyz(String serverUrl, String token, Path servingCert) throws Exception {
        if (!Files.exists(servingCert)) {
            return false;
        }
        HttpRequest request = HttpRequest.newBuilder(URI.create(serverUrl + "/readyz"))
                .header("Authorization", "Bearer " + token)
                .timeout(Duration.ofSeconds(5))
                .build();
        try (HttpClient http = HttpClient.newBuilder()
                .sslContext(trusting(servingCert))
                .connectTimeout(Duration.ofSeconds(2))
                .build()) {
            HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
            if (response.statusCode() != 200) {
                throw new IllegalStateException("/readyz answered " + response.statusCode() + ":\n" + response.body());
            }
            return true;
        }
    }

    private static SSLContext trusting(Path pemCertificates) throws Exception {
        KeyStore trusted = KeyStore.getInstance(KeyStore.getDefaultType());
        trusted.load(null, null);
        try (InputStream in = Files.newInputStream(pemCertificates)) {
            int index = 0;
            for (Certificate certificate : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                trusted.setCertificateEntry("cert-" + index++, certificate);
            }
        }
        TrustManagerFactory trustManagers = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        trustManagers.init(trusted);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(null, trustManagers.getTrustManagers(), null);
        return context;
    }

    private static boolean hasDefaultServiceAccount(KubernetesClient client, String namespace) {
        return client.serviceAccounts().inNamespace(namespace).withName("default").get() != null;
    }

    /**
     * Writes the admin token for {@code --token-auth-file}, and the key pair that signs and
     * verifies ServiceAccount tokens, generated here so that no openssl is needed.
     */
    private static void writeCredentials(Path workDir, String token) {
        KeyPair serviceAccountKey;
        try {
            KeyPairGenerator generator = KeyPairGenerator.getInstance("RSA");
            generator.initialize(2048);
            serviceAccountKey = generator.generateKeyPair();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("this JVM cannot generate RSA keys", e);
        }
        write(workDir.resolve("tokens.csv"), token + "," + ADMIN + "," + ADMIN + ",system:masters\n");
        write(workDir.resolve("sa.key"), pem("PRIVATE KEY", serviceAccountKey.getPrivate().getEncoded()));
        write(workDir.resolve("sa.pub"), pem("PUBLIC KEY", serviceAccountKey.getPublic().getEncoded()));
    }

    private static String pem(String type, byte[] der) {
        String base64 = Base64.getMimeEncoder(64, new byte[] {'\n'}).encodeToString(der);
        return "-----BEGIN " + type + "-----\n" + base64 + "\n-----END " + type + "-----\n";
    }

    private static Path writeKubeconfig(Path workDir, String serverUrl, String token, byte[] caCertificates) {
        Path file = workDir.resolve("kubeconfig");
        write(file, """
                apiVersion: v1
                kind: Config
                clusters:
                - name: kube-test-cluster
                  cluster:
                    server: %s
                    certificate-authority-data: %s
                users:
                - name: %s
                  user:
                    token: %s
                contexts:
                - name: kube-test-cluster
                  context:
                    cluster: kube-test-cluster
                    user: %s
                    namespace: default
                current-context: kube-test-cluster
                """.formatted(serverUrl, Base64.getEncoder().encodeToString(caCertificates), ADMIN, token, ADMIN));
        return file;
    }

    private static Config loadConfig(Path kubeconfig) {
        return Config.fromKubeconfig(kubeconfig.toFile());
    }

    /**
     * Distinct free ports, found by binding them all at once; they are released just before the
     * processes bind them, a window in which another process taking one is very unlikely.
     */
    private static int[] freeLoopbackPorts(int count) {
        List<ServerSocket> sockets = new ArrayList<>();
        try {
            InetAddress loopback = InetAddress.getByName(LOOPBACK);
            for (int i = 0; i < count; i++) {
                sockets.add(new ServerSocket(0, 1, loopback));
            }
            return sockets.stream().mapToInt(ServerSocket::getLocalPort).toArray();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot find free loopback ports", e);
        } finally {
            for (ServerSocket socket : sockets) {
                try {
                    socket.close();
                } catch (IOException e) {
                    // Closing a listening socket that never accepted anything cannot lose data.
                }
            }
        }
    }

    private static void stopAll(List<LoggedProcess> processes) {
        processes.reversed().forEach(LoggedProcess::stop);
    }

    private static void deleteRecursively(Path dir) {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> paths = Files.walk(dir)) {
            for (Path path : paths.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(path);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot delete " + dir, e);
        }
    }

    private static byte[] randomBytes(int count) {
        byte[] bytes = new byte[count];
        new SecureRandom().nextBytes(bytes);
        return bytes;
    }

    private static byte[] read(Path file) {
        try {
            return Files.readAllBytes(file);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file, e);
        }
    }

    private static void write(Path file, String content) {
        try {
            Files.writeString(file, content);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file, e);
        }
    }
}
