package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.client.KubernetesClient;
import io.kubenbd.operator.testing.HelmChart;
import io.kubenbd.operator.testing.KubeTestCluster;
import org.junit.jupiter.api.Test;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The operator's scenarios with {@code operator.watchNamespaces} set: the operator runs as the ServiceAccount of a
 * release of its own, with exactly the RBAC the chart renders for those namespaces (Roles there, nothing namespaced
 * cluster-wide), and each scenario takes one of the watched namespaces. What it may do anywhere else is asked of the
 * API server.
 */
class NbdExportOperatorWatchedNamespacesIT extends OperatorScenarios {
    private static final String RELEASE = "kube-nbd-watching";
    private static final String RELEASE_NAMESPACE = "kube-nbd-watching-system";
    /** One per scenario that makes a namespace; more scenarios than this fail with a message saying so. */
    private static final int WATCHED = 10;
    private final Set<String> watched = new LinkedHashSet<>();
    private final Deque<String> unused = new ArrayDeque<>();
    private String user;
    private String unwatched;

    @Override
    KubernetesClient operatorClient(KubeTestCluster cluster) throws Exception {
        for (int i = 0; i < WATCHED; i++) {
            watched.add(cluster.createNamespace("watched"));
        }
        unused.addAll(watched);
        unwatched = cluster.createNamespace("unwatched");
        user = HelmChart.installRbac(cluster.client(), RELEASE, RELEASE_NAMESPACE,
                "--set", "operator.watchNamespaces={" + String.join(",", watched) + "}");
        return cluster.clientAs(user);
    }

    @Override
    String leaseNamespace(KubeTestCluster cluster) {
        return RELEASE_NAMESPACE;
    }

    @Override
    Set<String> watchedNamespaces() {
        return watched;
    }

    @Override
    String scenarioNamespace(KubeTestCluster cluster, String prefix) {
        synchronized (unused) {
            if (unused.isEmpty()) {
                throw new AssertionError("more scenarios than the " + WATCHED + " watched namespaces; raise WATCHED");
            }
            return unused.pop();
        }
    }

    @Test
    void outsideTheWatchedNamespacesTheOperatorMayNotTouchSecretsWorkloadsOrPods(KubeTestCluster cluster) {
        String inside = watched.iterator().next();
        record Access(String verb, String group, String resource) {
        }
        List<Access> namespaced = List.of(new Access("get", "", "secrets"), new Access("list", "", "secrets"),
                new Access("create", "", "secrets"), new Access("create", "apps", "statefulsets"),
                new Access("list", "", "pods"), new Access("delete", "", "pods"), new Access("create", "", "services"),
                new Access("list", "", "persistentvolumeclaims"), new Access("patch", "kubenbd.io", "nbdexports/status"));
        List<String> allowedOutside = new ArrayList<>();
        for (Access access : namespaced) {
            assertThat(cluster.serviceAccountMay(user, access.verb(), access.group(), access.resource(), inside))
                    .as("%s may %s %s in watched namespace %s", user, access.verb(), access.resource(), inside).isTrue();
            for (String namespace : Arrays.asList(unwatched, null)) {
                if (cluster.serviceAccountMay(user, access.verb(), access.group(), access.resource(), namespace)) {
                    allowedOutside.add(access.verb() + " " + access.resource() + " in " + (namespace == null ? "all namespaces" : namespace));
                }
            }
        }
        assertThat(allowedOutside).as("what %s may do outside the watched namespaces", user).isEmpty();
        // Cluster-wide by nature: PersistentVolumes are cluster-scoped; the CSI controller reads any NbdExport.
        assertThat(cluster.serviceAccountMay(user, "create", "", "persistentvolumes", null)).isTrue();
        assertThat(cluster.serviceAccountMay(user, "get", "kubenbd.io", "nbdexports", unwatched)).isTrue();
        assertThat(cluster.serviceAccountMay(user, "list", "kubenbd.io", "nbdexports", unwatched)).isFalse();
    }
}
