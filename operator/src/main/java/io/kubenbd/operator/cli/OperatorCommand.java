package io.kubenbd.operator.cli;

import io.fabric8.kubernetes.client.Config;
import io.fabric8.kubernetes.client.KubernetesClientBuilder;
import io.kubenbd.operator.csi.CsiControllerEndpoint;
import io.kubenbd.operator.reconciler.ConsumerVolumePolicy;
import io.kubenbd.operator.reconciler.ControlNetworkPolicy;
import io.kubenbd.operator.reconciler.ServerSettings;
import io.kubenbd.operator.runtime.KubeNbdOperator;
import io.kubenbd.operator.runtime.OperatorOptions;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;

/** {@code kube-nbd-operator}: reconciles NbdExports until SIGTERM. */
@Command(name = "kube-nbd-operator", mixinStandardHelpOptions = true, version = "kube-nbd-operator 0.1.0",
        description = "Reconciles NbdExport resources into TLS-protected NBD servers.")
public final class OperatorCommand implements Callable<Integer> {
    private static final Path SERVICE_ACCOUNT_NAMESPACE = Path.of("/var/run/secrets/kubernetes.io/serviceaccount/namespace");

    @Option(names = "--kubeconfig", paramLabel = "FILE",
            description = "kubeconfig to use (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config)")
    Path kubeconfig;

    @Option(names = "--namespace", paramLabel = "NS", split = ",",
            description = "namespace(s) to watch (default: all)")
    List<String> namespaces = List.of();

    @Option(names = "--server-image", paramLabel = "IMAGE", defaultValue = "${env:KUBE_NBD_SERVER_IMAGE:-" + ServerSettings.DEFAULT_IMAGE + "}",
            description = "image with nbd-node for the server pods (default: ${DEFAULT-VALUE})")
    String serverImage;

    @Option(names = "--server-image-pull-policy", paramLabel = "POLICY", defaultValue = "IfNotPresent",
            description = "Always, IfNotPresent or Never (default: ${DEFAULT-VALUE})")
    String pullPolicy;

    @Option(names = "--server-java-options", paramLabel = "OPTS", defaultValue = ServerSettings.DEFAULT_JAVA_OPTIONS,
            description = "JVM options of the servers (default: ${DEFAULT-VALUE})")
    String serverJavaOptions;

    @Option(names = "--server-control-port", paramLabel = "PORT", defaultValue = "" + ServerSettings.DEFAULT_CONTROL_PORT,
            description = "port of the servers' control API, used for dirty bitmaps (default: ${DEFAULT-VALUE})")
    int controlPort;

    @Option(names = "--control-network-policy-selector", paramLabel = "KEY=VALUE", split = ",",
            description = {"Make a NetworkPolicy per export that admits the servers' control port only from pods with",
                    "these labels in the operator's namespace (the chart sets it when it fences no namespace itself)"})
    Map<String, String> controlNetworkPolicySelector;

    @Option(names = "--persistent-volume-class", paramLabel = "CLASS", defaultValue = ConsumerVolumePolicy.DEFAULT_STORAGE_CLASS,
            description = "storage class of every PersistentVolume the operator writes for an export; an NbdExport may "
                    + "not name another (default: ${DEFAULT-VALUE})")
    String persistentVolumeClass;

    @Option(names = "--persistent-volume-consumer-namespaces", paramLabel = "NS", split = ",",
            description = "namespaces whose claims any export's PersistentVolume may be pre-bound to (claimRef), "
                    + "besides the export's own namespace (default: none)")
    List<String> consumerNamespaces = List.of();

    @Option(names = "--leader-election", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "take a Lease before reconciling, so that only one of several replicas acts (default: on)")
    boolean leaderElection;

    @Option(names = "--lease-namespace", paramLabel = "NS",
            description = "namespace of the Lease (default: $POD_NAMESPACE, else the service account's namespace)")
    String leaseNamespace;

    @Option(names = "--control-ca-namespace", paramLabel = "NS",
            description = "namespace of the Secret kube-nbd-control-ca, the CA of the servers' control API "
                    + "(default: $POD_NAMESPACE, else the service account's namespace, else --lease-namespace)")
    String controlCaNamespace;

    @Option(names = "--lease-name", paramLabel = "NAME", defaultValue = OperatorOptions.DEFAULT_LEASE_NAME,
            description = "name of the Lease (default: ${DEFAULT-VALUE})")
    String leaseName;

    @Option(names = "--identity", paramLabel = "NAME", description = "this replica's name in the Lease (default: $POD_NAME, else the host name)")
    String identity;

    @Option(names = "--http-bind", paramLabel = "ADDR", defaultValue = "0.0.0.0",
            description = "address of /healthz, /readyz and /metrics (default: ${DEFAULT-VALUE})")
    String httpBind;

    @Option(names = "--http-port", paramLabel = "PORT", defaultValue = "8080",
            description = "port of /healthz, /readyz and /metrics; -1 turns them off (default: ${DEFAULT-VALUE})")
    int httpPort;

    @Option(names = "--reconcile-threads", paramLabel = "N", defaultValue = "10",
            description = "exports reconciled at once (default: ${DEFAULT-VALUE})")
    int reconcileThreads;

    @Option(names = "--csi-controller-endpoint", paramLabel = "unix:///PATH",
            description = "serve the CSI Controller and Identity services of nbd.csi.kubenbd.io on this unix socket, "
                    + "for the external-attacher sidecar (default: not served)")
    String csiControllerEndpoint;

    @Override
    public Integer call() throws Exception {
        Config config = kubeconfig == null ? Config.autoConfigure(null)
                : Config.fromKubeconfig(null, Files.readString(kubeconfig), kubeconfig.toString());
        String leaseNs = leaderElection ? leaseNamespace() : null;
        if (leaderElection && leaseNs == null) {
            throw new CommandLine.ParameterException(new CommandLine(this),
                    "--lease-namespace is needed outside a pod (or --no-leader-election for a single replica)");
        }
        String caNamespace = controlCaNamespace != null ? controlCaNamespace
                : ownNamespace() != null ? ownNamespace() : leaseNamespace;
        if (caNamespace == null) {
            throw new CommandLine.ParameterException(new CommandLine(this),
                    "--control-ca-namespace is needed outside a pod: the namespace of the control API's CA Secret");
        }
        var options = new OperatorOptions(Set.copyOf(namespaces),
                new ServerSettings(serverImage, pullPolicy, controlPort, serverJavaOptions,
                        controlNetworkPolicySelector == null || controlNetworkPolicySelector.isEmpty() ? null
                                : new ControlNetworkPolicy(caNamespace, controlNetworkPolicySelector)),
                leaseNs, leaseName, identity(), httpBind, httpPort, reconcileThreads, true,
                new ConsumerVolumePolicy(persistentVolumeClass, Set.copyOf(consumerNamespaces)), caNamespace);
        var stopped = new CountDownLatch(1);
        Path csiSocket = csiControllerEndpoint == null ? null : unixSocket(csiControllerEndpoint);
        try (var client = new KubernetesClientBuilder().withConfig(config).build();
             var operator = KubeNbdOperator.start(client, options);
             var csiController = csiSocket == null ? null : CsiControllerEndpoint.start(client, csiSocket)) {
            Runtime.getRuntime().addShutdownHook(Thread.ofPlatform().unstarted(() -> {
                if (csiController != null) {
                    csiController.close();
                }
                operator.close();
                stopped.countDown();
            }));
            stopped.await();
        }
        return 0;
    }

    private Path unixSocket(String endpoint) {
        if (!endpoint.startsWith("unix://") || !endpoint.substring("unix://".length()).startsWith("/")) {
            throw new CommandLine.ParameterException(new CommandLine(this),
                    "--csi-controller-endpoint must be unix:///ABSOLUTE/PATH, not " + endpoint);
        }
        return Path.of(endpoint.substring("unix://".length()));
    }

    private String leaseNamespace() throws IOException {
        return leaseNamespace != null ? leaseNamespace : ownNamespace();
    }

    /** The namespace this pod runs in; null outside a pod. */
    private static String ownNamespace() throws IOException {
        String fromEnv = System.getenv("POD_NAMESPACE");
        if (fromEnv != null && !fromEnv.isEmpty()) {
            return fromEnv;
        }
        return Files.exists(SERVICE_ACCOUNT_NAMESPACE) ? Files.readString(SERVICE_ACCOUNT_NAMESPACE).strip() : null;
    }

    private String identity() throws IOException {
        if (identity != null) {
            return identity;
        }
        String pod = System.getenv("POD_NAME");
        return pod != null && !pod.isEmpty() ? pod : InetAddress.getLocalHost().getHostName();
    }

    public static void main(String[] args) {
        System.exit(new CommandLine(new OperatorCommand()).execute(args));
    }
}
