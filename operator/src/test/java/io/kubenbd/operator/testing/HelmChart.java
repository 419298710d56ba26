package io.kubenbd.operator.testing;

import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.NamespaceBuilder;
import io.fabric8.kubernetes.api.model.apps.Deployment;
import io.fabric8.kubernetes.client.KubernetesClient;

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * The chart in {@code charts/kube-nbd} and the helm binary built from the Go module proxy by
 * {@code scripts/k8s-test-binaries.sh}: rendering and linting the way a user's
 * {@code helm install} would.
 */
public final class HelmChart {
    public static final Path CHART = Path.of("..", "charts", "kube-nbd").toAbsolutePath().normalize();
    public static final String RELEASE = "kube-nbd";
    public static final String NAMESPACE = "kube-nbd-system";
    /** The test cluster's version: helm template checks the chart's kubeVersion against it. */
    private static final String KUBE_VERSION = System.getenv().getOrDefault("KUBE_NBD_KUBE_VERSION", "v1.34.4");
    private static final Path HELM = Path.of(System.getProperty("user.home"), ".cache", "kube-nbd", "bin",
            "helm-" + System.getenv().getOrDefault("KUBE_NBD_HELM_VERSION", "v3.22.0"), "helm");

    private HelmChart() {}

    public static PeerCommand.Result helm(String... args) throws Exception {
        if (!Files.isExecutable(HELM)) {
            throw new AssertionError(HELM + " is missing: run scripts/k8s-test-binaries.sh helm");
        }
        List<String> argv = new ArrayList<>(List.of(HELM.toString()));
        argv.addAll(List.of(args));
        return PeerCommand.run(Duration.ofMinutes(2), argv.toArray(String[]::new));
    }

    /** {@code helm template} of the release into {@link #NAMESPACE} with extra arguments; fails on a helm error. */
    public static String render(String... extra) throws Exception {
        return renderRelease(RELEASE, NAMESPACE, extra);
    }

    /** {@code helm template} of {@code release} into {@code namespace} with extra arguments; fails on a helm error. */
    public static String renderRelease(String release, String namespace, String... extra) throws Exception {
        List<String> args = new ArrayList<>(List.of("template", release, CHART.toString(), "--namespace", namespace,
                "--kube-version", KUBE_VERSION));
        args.addAll(List.of(extra));
        PeerCommand.Result result = helm(args.toArray(String[]::new));
        if (result.exitCode() != 0) {
            throw new AssertionError("helm template " + String.join(" ", extra) + " failed:\n" + result.output());
        }
        return result.stdout();
    }

    /**
     * Applies the default render's ServiceAccounts and RBAC (roles and bindings) as they would be installed, in
     * {@link #NAMESPACE} (created when missing), so that a test can act as the operator's ServiceAccount.
     *
     * @return that ServiceAccount's user name, {@code system:serviceaccount:<namespace>:<name>}
     */
    public static String installRbac(KubernetesClient admin) throws Exception {
        return installRbac(admin, RELEASE, NAMESPACE);
    }

    /**
     * As {@link #installRbac(KubernetesClient)} for another release (its own ServiceAccount and roles) in
     * {@code namespace}, rendered with {@code values} ({@code --set ...}); the namespaces the render puts
     * Roles in must exist.
     */
    public static String installRbac(KubernetesClient admin, String release, String namespace, String... values) throws Exception {
        if (admin.namespaces().withName(namespace).get() == null) {
            admin.namespaces().resource(new NamespaceBuilder().withNewMetadata().withName(namespace).endMetadata().build())
                    .create();
        }
        List<HasMetadata> objects = objects(admin, renderRelease(release, namespace, values));
        for (HasMetadata object : objects) {
            if (List.of("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding").contains(object.getKind())) {
                var resource = object.getMetadata().getNamespace() == null && object.getKind().matches("ServiceAccount|Role|RoleBinding")
                        ? admin.resource(object).inNamespace(namespace) : admin.resource(object);
                resource.forceConflicts().serverSideApply();
            }
        }
        String serviceAccount = objects.stream().filter(Deployment.class::isInstance).map(Deployment.class::cast)
                .map(d -> d.getSpec().getTemplate().getSpec().getServiceAccountName()).findFirst().orElseThrow();
        return "system:serviceaccount:" + namespace + ":" + serviceAccount;
    }

    /** The rendered objects, parsed by the client's serializer. */
    public static List<HasMetadata> objects(KubernetesClient client, String rendered) {
        return client.load(new ByteArrayInputStream(rendered.getBytes(StandardCharsets.UTF_8))).items();
    }
}
