package io.kubenbd.operator.chart;

import io.fabric8.kubernetes.api.model.Container;
import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.VolumeMount;
import io.fabric8.kubernetes.api.model.NamespaceBuilder;
import io.fabric8.kubernetes.api.model.apps.DaemonSet;
import io.fabric8.kubernetes.api.model.apps.Deployment;
import io.fabric8.kubernetes.api.model.networking.v1.NetworkPolicy;
import io.fabric8.kubernetes.api.model.rbac.ClusterRole;
import io.fabric8.kubernetes.api.model.rbac.PolicyRule;
import io.fabric8.kubernetes.api.model.rbac.Role;
import io.fabric8.kubernetes.api.model.rbac.RoleBinding;
import io.fabric8.kubernetes.api.model.rbac.RoleBindingBuilder;
import io.fabric8.kubernetes.api.model.storage.CSIDriver;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.kubenbd.operator.reconciler.ServerPodTemplate;
import io.kubenbd.operator.testing.Await;
import io.kubenbd.operator.testing.HelmChart;
import io.kubenbd.operator.testing.KubeTestCluster;
import io.kubenbd.operator.testing.KubeTestClusterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The chart as a user meets it: {@code helm lint} clean, bad values refused by
 * values.schema.json, the default and the all-options renders accepted by a real API server
 * (server-side dry run, as {@code kubectl apply --dry-run=server}), the CRD the one in
 * {@code crds/}, and the images and entry points the ones the Dockerfile builds.
 */
@ExtendWith(KubeTestClusterExtension.class)
class ChartIT {
    private static final Path ALL_OPTIONS = HelmChart.CHART.resolve("ci/all-options-values.yaml");
    private static final Path DOCKERFILE = Path.of("..", "Dockerfile");

    @Test
    void lintIsClean() throws Exception {
        var lint = HelmChart.helm("lint", "--strict", HelmChart.CHART.toString());
        assertThat(lint.exitCode()).as(lint.output()).isZero();
        assertThat(lint.output()).contains("1 chart(s) linted, 0 chart(s) failed").doesNotContain("[WARNING]");
        var withOptions = HelmChart.helm("lint", "--strict", HelmChart.CHART.toString(), "-f", ALL_OPTIONS.toString());
        assertThat(withOptions.exitCode()).as(withOptions.output()).isZero();
    }

    @Test
    void badValuesFailAtInstallTime() throws Exception {
        for (String bad : List.of("operator.replicas=0", "image.pullPolicy=Sometimes", "unknownKey=1")) {
            var result = HelmChart.helm("template", HelmChart.RELEASE, HelmChart.CHART.toString(), "--set", bad);
            assertThat(result.exitCode()).as(bad).isNotZero();
            assertThat(result.stderr()).as(bad).contains("values don't meet the specifications of the schema");
        }
    }

    @Test
    void defaultAndAllOptionsRendersAreAcceptedByTheApiServer(KubeTestCluster cluster) throws Exception {
        KubernetesClient client = cluster.client();
        // The switches the all-options file must leave on (turning them off removes objects) are turned off here.
        List<String> switchesOff = List.of("--set", "csiNode.enabled=false", "--set", "networkPolicy.enabled=false",
                "--set", "operator.leaderElection=false", "--set", "operator.replicas=1", "--set", "storageClass.create=false");
        for (List<String> values : List.of(List.<String>of(), List.of("-f", ALL_OPTIONS.toString()), switchesOff)) {
            List<HasMetadata> objects = HelmChart.objects(client, HelmChart.render(values.toArray(String[]::new)));
            assertThat(objects).isNotEmpty();
            Set<String> namespaces = new LinkedHashSet<>(List.of(HelmChart.NAMESPACE));
            objects.stream().map(o -> o.getMetadata().getNamespace()).filter(ns -> ns != null).forEach(namespaces::add);
            for (String ns : namespaces) {
                if (client.namespaces().withName(ns).get() == null) {
                    client.namespaces().resource(new NamespaceBuilder().withNewMetadata().withName(ns).endMetadata().build()).create();
                }
            }
            for (HasMetadata object : objects) {
                var resource = object.getMetadata().getNamespace() == null && isNamespaced(client, object)
                        ? client.resource(object).inNamespace(HelmChart.NAMESPACE) : client.resource(object);
                HasMetadata accepted = resource.dryRun().serverSideApply();
                assertThat(accepted.getMetadata().getName()).as(object.getKind()).isEqualTo(object.getMetadata().getName());
            }
            if (values == switchesOff) {
                assertThat(objects).extracting(HasMetadata::getKind)
                        .contains("Deployment", "ClusterRole").doesNotContain("DaemonSet", "CSIDriver", "StorageClass");
                // Without leader election no Lease Role: only the control CA's Secret is granted in the release namespace.
                assertThat(objects).filteredOn(o -> o.getKind().equals("Role")).extracting(o -> o.getMetadata().getName())
                        .containsExactly("kube-nbd-control-ca");
            } else {
                assertThat(objects).extracting(HasMetadata::getKind)
                        .contains("Deployment", "DaemonSet", "CSIDriver", "ServiceAccount", "ClusterRole", "ClusterRoleBinding");
            }
        }
    }

    /**
     * The CSI controller is served by the operator and reached by the external-attacher beside it: one socket in a
     * shared emptyDir, attachRequired on the CSIDriver (else Kubernetes never asks), the attacher's leader election
     * on exactly when the operator's is (several replicas), and none of it without the CSI driver.
     */
    @Test
    void theCsiAttacherSharesTheOperatorsSocketAndLeaderElection(KubeTestCluster cluster) throws Exception {
        KubernetesClient client = cluster.client();
        for (boolean leaderElection : List.of(true, false)) {
            List<HasMetadata> objects = HelmChart.objects(client, HelmChart.render("--set", "operator.leaderElection=" + leaderElection,
                    "--set", "operator.replicas=" + (leaderElection ? 2 : 1)));
            CSIDriver driver = objects.stream().filter(CSIDriver.class::isInstance).map(CSIDriver.class::cast).findFirst().orElseThrow();
            assertThat(driver.getSpec().getAttachRequired()).isTrue();
            var pod = objects.stream().filter(Deployment.class::isInstance).map(Deployment.class::cast).findFirst().orElseThrow()
                    .getSpec().getTemplate().getSpec();
            Container operator = pod.getContainers().getFirst();
            Container attacher = pod.getContainers().stream().filter(c -> c.getName().equals("csi-attacher")).findFirst().orElseThrow();
            String socket = operator.getArgs().stream().filter(a -> a.startsWith("--csi-controller-endpoint=unix://"))
                    .map(a -> a.substring("--csi-controller-endpoint=unix://".length())).findFirst().orElseThrow();
            assertThat(attacher.getArgs()).contains("--csi-address=" + socket, "--leader-election=" + leaderElection);
            String socketDir = Path.of(socket).getParent().toString();
            List<String> mounted = List.of(operator, attacher).stream().map(c -> c.getVolumeMounts().stream()
                    .filter(m -> m.getMountPath().equals(socketDir)).map(VolumeMount::getName).findFirst()
                    .orElseThrow(() -> new AssertionError(c.getName() + " does not mount " + socketDir))).toList();
            assertThat(mounted.getFirst()).isEqualTo(mounted.getLast());
            assertThat(pod.getVolumes()).filteredOn(v -> v.getName().equals(mounted.getFirst()))
                    .singleElement().satisfies(v -> assertThat(v.getEmptyDir()).isNotNull());
        }
        var withoutCsi = HelmChart.objects(client, HelmChart.render("--set", "csiNode.enabled=false"));
        var operatorOnly = withoutCsi.stream().filter(Deployment.class::isInstance).map(Deployment.class::cast).findFirst()
                .orElseThrow().getSpec().getTemplate().getSpec();
        assertThat(operatorOnly.getContainers()).extracting(Container::getName).containsExactly("operator");
        assertThat(operatorOnly.getContainers().getFirst().getArgs()).noneMatch(a -> a.startsWith("--csi-controller-endpoint"));
        assertThat(withoutCsi).noneMatch(o -> o.getMetadata().getName().endsWith("-csi-controller"));
    }

    /**
     * With no namespace to put the chart's NetworkPolicy in (all watched, none listed), the operator is told to fence
     * each export's control port itself, and may manage NetworkPolicies; where the chart fences, it is not.
     */
    @Test
    void theOperatorFencesTheControlPortWhereTheChartCannot(KubeTestCluster cluster) throws Exception {
        String selector = "--control-network-policy-selector=app.kubernetes.io/name=kube-nbd,app.kubernetes.io/instance="
                + HelmChart.RELEASE + ",app.kubernetes.io/component=operator";
        List<HasMetadata> defaults = HelmChart.objects(cluster.client(), HelmChart.render());
        assertThat(ofKind(defaults, NetworkPolicy.class)).isEmpty();
        assertThat(operatorArgs(defaults)).contains(selector);
        assertThat(resources(operatorClusterRole(defaults).getRules())).contains("networking.k8s.io/networkpolicies");

        for (String[] fenced : List.of(new String[] {"--set", "networkPolicy.exportNamespaces={vms}"},
                new String[] {"--set", "operator.watchNamespaces={vms}"}, new String[] {"--set", "networkPolicy.enabled=false"})) {
            List<HasMetadata> objects = HelmChart.objects(cluster.client(), HelmChart.render(fenced));
            assertThat(operatorArgs(objects)).as(String.join(" ", fenced)).noneMatch(a -> a.startsWith("--control-network-policy"));
            assertThat(resources(operatorClusterRole(objects).getRules())).as(String.join(" ", fenced))
                    .doesNotContain("networking.k8s.io/networkpolicies");
        }
    }

    private static List<String> operatorArgs(List<HasMetadata> objects) {
        return ofKind(objects, Deployment.class).getFirst().getSpec().getTemplate().getSpec().getContainers().stream()
                .filter(c -> c.getName().equals("operator")).findFirst().orElseThrow().getArgs();
    }

    private static ClusterRole operatorClusterRole(List<HasMetadata> objects) {
        return ofKind(objects, ClusterRole.class).stream()
                .filter(r -> r.getMetadata().getName().equals("kube-nbd-operator")).findFirst().orElseThrow();
    }

    /**
     * The control port is fenced to the operator wherever exports can live: in exportNamespaces, or, when those are not
     * listed, in every namespace the operator watches (its exports can be nowhere else).
     */
    @Test
    void theControlPortIsFencedInTheWatchedNamespacesByDefault(KubeTestCluster cluster) throws Exception {
        KubernetesClient client = cluster.client();
        List<NetworkPolicy> watched = HelmChart.objects(client, HelmChart.render("--set", "operator.watchNamespaces={vms,backup}"))
                .stream().filter(NetworkPolicy.class::isInstance).map(NetworkPolicy.class::cast).toList();
        assertThat(watched).extracting(p -> p.getMetadata().getNamespace()).containsExactly("vms", "backup");
        assertThat(watched.getFirst().getSpec().getIngress()).anySatisfy(rule -> {
            assertThat(rule.getPorts()).singleElement().satisfies(port -> assertThat(port.getPort().getIntVal()).isEqualTo(10810));
            assertThat(rule.getFrom()).singleElement().satisfies(peer -> assertThat(peer.getPodSelector().getMatchLabels())
                    .containsEntry("app.kubernetes.io/component", "operator"));
        });
        List<NetworkPolicy> listed = HelmChart.objects(client, HelmChart.render("--set", "operator.watchNamespaces={vms,backup}",
                        "--set", "networkPolicy.exportNamespaces={vms}"))
                .stream().filter(NetworkPolicy.class::isInstance).map(NetworkPolicy.class::cast).toList();
        assertThat(listed).extracting(p -> p.getMetadata().getNamespace()).containsExactly("vms");
    }

    /** The resources a role's rules name, e.g. {@code secrets}, {@code apps/statefulsets}. */
    private static Set<String> resources(List<PolicyRule> rules) {
        Set<String> resources = new LinkedHashSet<>();
        for (PolicyRule rule : rules) {
            for (String group : rule.getApiGroups()) {
                rule.getResources().forEach(r -> resources.add(group.isEmpty() ? r : group + "/" + r));
            }
        }
        return resources;
    }

    private static <T extends HasMetadata> List<T> ofKind(List<HasMetadata> objects, Class<T> kind) {
        return objects.stream().filter(kind::isInstance).map(kind::cast).toList();
    }

    /**
     * With watchNamespaces the operator's namespaced rights (Secrets, StatefulSets, Services, pods, ...) are a Role and
     * RoleBinding in each watched namespace, and its ClusterRole holds only what is cluster-scoped by nature.
     */
    @Test
    void watchNamespacesGrantsNamespacedObjectsOnlyInThoseNamespaces(KubeTestCluster cluster) throws Exception {
        Set<String> namespaced = Set.of("secrets", "apps/statefulsets", "services", "pods", "persistentvolumeclaims", "events",
                "kubenbd.io/nbdexports/status");
        List<HasMetadata> all = HelmChart.objects(cluster.client(), HelmChart.render());
        ClusterRole clusterWide = ofKind(all, ClusterRole.class).stream()
                .filter(r -> r.getMetadata().getName().equals("kube-nbd-operator")).findFirst().orElseThrow();
        assertThat(resources(clusterWide.getRules())).containsAll(namespaced);
        assertThat(ofKind(all, Role.class)).noneMatch(r -> r.getMetadata().getName().equals("kube-nbd-operator"));

        List<HasMetadata> watching = HelmChart.objects(cluster.client(), HelmChart.render("--set", "operator.watchNamespaces={vms,backup}"));
        ClusterRole narrowed = ofKind(watching, ClusterRole.class).stream()
                .filter(r -> r.getMetadata().getName().equals("kube-nbd-operator")).findFirst().orElseThrow();
        assertThat(resources(narrowed.getRules())).containsExactlyInAnyOrder("persistentvolumes", "kubenbd.io/nbdexports");
        assertThat(narrowed.getRules()).filteredOn(r -> r.getApiGroups().contains("kubenbd.io")).singleElement()
                .satisfies(r -> assertThat(r.getVerbs()).containsExactly("get"));
        for (String ns : List.of("vms", "backup")) {
            Role role = ofKind(watching, Role.class).stream()
                    .filter(r -> ns.equals(r.getMetadata().getNamespace()) && r.getMetadata().getName().equals("kube-nbd-operator"))
                    .findFirst().orElseThrow(() -> new AssertionError("no operator Role in " + ns));
            assertThat(resources(role.getRules())).containsAll(namespaced);
            RoleBinding binding = ofKind(watching, RoleBinding.class).stream()
                    .filter(b -> ns.equals(b.getMetadata().getNamespace()) && b.getMetadata().getName().equals("kube-nbd-operator"))
                    .findFirst().orElseThrow(() -> new AssertionError("no operator RoleBinding in " + ns));
            assertThat(binding.getRoleRef().getKind() + "/" + binding.getRoleRef().getName()).isEqualTo("Role/kube-nbd-operator");
            assertThat(binding.getSubjects()).singleElement().satisfies(subject -> assertThat(
                    subject.getNamespace() + "/" + subject.getName()).isEqualTo(HelmChart.NAMESPACE + "/kube-nbd-operator"));
        }
    }

    /**
     * Creating an NbdExport reads and writes the namespace's PVCs over the network, so it comes with edit and admin
     * (who may mount those PVCs in pods anyway), and reading one with view; proven through the cluster's own
     * aggregation of the built-in roles.
     */
    @Test
    void tenantRolesAggregateIntoTheBuiltInEditAndViewRoles(KubeTestCluster cluster) throws Exception {
        KubernetesClient client = cluster.client();
        List<HasMetadata> objects = HelmChart.objects(client, HelmChart.render());
        for (ClusterRole role : ofKind(objects, ClusterRole.class)) {
            if (role.getMetadata().getName().matches("kube-nbd-(edit|view)")) {
                client.resource(role).forceConflicts().serverSideApply();
            }
        }
        String ns = cluster.createNamespace("tenant");
        for (String builtIn : List.of("edit", "view")) {
            client.rbac().roleBindings().inNamespace(ns).resource(new RoleBindingBuilder()
                    .withNewMetadata().withName(builtIn).endMetadata()
                    .withNewRoleRef().withApiGroup("rbac.authorization.k8s.io").withKind("ClusterRole").withName(builtIn).endRoleRef()
                    .addNewSubject().withApiGroup("rbac.authorization.k8s.io").withKind("User").withName(builtIn + "-user").endSubject()
                    .build()).create();
        }
        Await.until("the built-in edit role aggregating kube-nbd-edit", Duration.ofSeconds(30),
                () -> cluster.userMay("edit-user", List.of(), "create", "kubenbd.io", "nbdexports", ns), allowed -> allowed);
        Await.until("the built-in view role aggregating kube-nbd-view", Duration.ofSeconds(30),
                () -> cluster.userMay("view-user", List.of(), "list", "kubenbd.io", "nbdexports", ns), allowed -> allowed);
        assertThat(cluster.userMay("view-user", List.of(), "create", "kubenbd.io", "nbdexports", ns)).isFalse();
        assertThat(cluster.userMay("edit-user", List.of(), "create", "kubenbd.io", "nbdexports", "default")).isFalse();

        List<HasMetadata> apart = HelmChart.objects(client, HelmChart.render("--set", "tenantRoles.aggregateToDefaultRoles=false"));
        assertThat(ofKind(apart, ClusterRole.class)).filteredOn(r -> r.getMetadata().getName().matches("kube-nbd-(edit|view)"))
                .hasSize(2).allSatisfy(r -> assertThat(r.getMetadata().getLabels().keySet())
                        .noneMatch(label -> label.startsWith("rbac.authorization.k8s.io/aggregate-to-")));
    }

    private static boolean isNamespaced(KubernetesClient client, HasMetadata object) {
        return !List.of("ClusterRole", "ClusterRoleBinding", "CSIDriver", "StorageClass", "Namespace",
                "CustomResourceDefinition", "PersistentVolume", "PriorityClass").contains(object.getKind());
    }

    @Test
    void theChartInstallsTheCommittedCrd() throws Exception {
        Path committed = Path.of("..", "crds", "nbdexports.kubenbd.io-v1.yml");
        assertThat(HelmChart.CHART.resolve("crds/nbdexports.kubenbd.io-v1.yml")).hasSameBinaryContentAs(committed);
    }

    @Test
    void imagesAndEntryPointsAreTheOnesTheDockerfileBuilds(KubeTestCluster cluster) throws Exception {
        String dockerfile = Files.readString(DOCKERFILE);
        List<HasMetadata> objects = HelmChart.objects(cluster.client(), HelmChart.render());
        Deployment operator = objects.stream().filter(Deployment.class::isInstance).map(Deployment.class::cast)
                .findFirst().orElseThrow();
        DaemonSet node = objects.stream().filter(DaemonSet.class::isInstance).map(DaemonSet.class::cast)
                .findFirst().orElseThrow();
        var operatorContainer = operator.getSpec().getTemplate().getSpec().getContainers().getFirst();
        var pluginContainer = node.getSpec().getTemplate().getSpec().getContainers().stream()
                .filter(c -> c.getCommand() != null && c.getCommand().contains(ServerPodTemplate.COMMAND)).findFirst().orElseThrow();
        // One image holds both programs; the chart runs both launchers from it, and hands it to the server pods.
        assertThat(pluginContainer.getImage()).isEqualTo(operatorContainer.getImage());
        assertThat(operatorContainer.getEnv()).anySatisfy(env -> {
            assertThat(env.getName()).isEqualTo("KUBE_NBD_SERVER_IMAGE");
            assertThat(env.getValue()).isEqualTo(operatorContainer.getImage());
        });
        assertThat(pluginContainer.getArgs()).startsWith("csi");
        String operatorCommand = operatorContainer.getCommand().getFirst();
        for (String launcher : List.of(ServerPodTemplate.COMMAND, operatorCommand)) {
            // Each launcher the chart and the operator run is a script the Dockerfile copies to /opt/kube-nbd/bin/,
            // and it starts a jar the Dockerfile copies from the Maven build.
            Path script = Path.of("..", "docker", Path.of(launcher).getFileName().toString());
            assertThat(launcher).startsWith("/opt/kube-nbd/bin/");
            assertThat(dockerfile).containsPattern("COPY docker/.*" + script.getFileName() + ".* /opt/kube-nbd/bin/");
            String jar = Files.readString(script).replaceAll("(?s).*-jar /opt/kube-nbd/lib/(\\S+).*", "$1");
            assertThat(dockerfile).containsPattern("COPY --from=build .*/target/" + jar + ".* /opt/kube-nbd/lib/");
        }
        // The image is built by the same Maven command as the README and CI.
        assertThat(dockerfile).contains("mvn -B -ntp -DskipTests package");
        assertThat(Files.readString(Path.of("..", "scripts", "dev-cluster.sh"))).contains("mvn -B -q -ntp -DskipTests package");
        assertThat(operator.getSpec().getTemplate().getSpec().getSecurityContext().getRunAsNonRoot()).isTrue();
        // Every export's PersistentVolume gets the chart's StorageClass, whatever an NbdExport asks for.
        assertThat(operatorContainer.getArgs()).contains("--persistent-volume-class=kube-nbd");
    }
}
