package io.kubenbd.operator.runtime;

import io.fabric8.kubernetes.api.model.coordination.v1.Lease;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.reconciler.ServerSettings;
import io.kubenbd.operator.testing.Await;
import io.kubenbd.operator.testing.KubeTestCluster;
import io.kubenbd.operator.testing.KubeTestClusterExtension;
import io.kubenbd.operator.testing.OperatorTestBed;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.time.Duration;
import java.util.Set;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Two operator instances on one Lease: only the holder reconciles; when it stops, the other takes
 * the Lease and carries on.
 */
@ExtendWith(KubeTestClusterExtension.class)
class LeaderElectionIT {

    private static KubeNbdOperator start(KubernetesClient client, String namespace, String leaseNamespace, String identity)
            throws Exception {
        return KubeNbdOperator.start(client, new OperatorOptions(Set.of(namespace),
                new ServerSettings("kube-nbd:test", "Never", OperatorTestBed.freePort(), ServerSettings.DEFAULT_JAVA_OPTIONS),
                leaseNamespace, OperatorOptions.DEFAULT_LEASE_NAME, identity, "127.0.0.1", 0, 2, false,
                leaseNamespace != null ? leaseNamespace : namespace));
    }

    private static double exportsSeen(KubeNbdOperator operator) {
        return operator.registry().find("kubenbd.exports").gauges().stream().mapToDouble(g -> g.value()).sum();
    }

    private static String holder(KubernetesClient client, String leaseNamespace) {
        Lease lease = client.leases().inNamespace(leaseNamespace).withName(OperatorOptions.DEFAULT_LEASE_NAME).get();
        return lease == null ? null : lease.getSpec().getHolderIdentity();
    }

    private static void createExport(KubernetesClient client, String ns, String name) {
        OperatorTestBed.createExport(client, ns, """
                apiVersion: kubenbd.io/v1alpha1
                kind: NbdExport
                metadata: {name: %s}
                spec: {source: {persistentVolumeClaim: %s, imagePath: disk.img}}
                """.formatted(name, name));
    }

    @Test
    void onlyTheLeaseHolderReconcilesAndTheOtherTakesOver(KubeTestCluster cluster) throws Exception {
        KubernetesClient client = cluster.client();
        OperatorTestBed.installCrds(cluster);
        String ns = cluster.createNamespace("leader");
        String leaseNs = cluster.createNamespace("lease");
        var operators = new java.util.HashMap<String, KubeNbdOperator>();
        try {
            operators.put("first", start(client, ns, leaseNs, "first"));
            Await.until("Lease held by first", Duration.ofSeconds(30), () -> holder(client, leaseNs), "first"::equals);
            operators.put("second", start(client, ns, leaseNs, "second"));

            createExport(client, ns, "one");
            Await.until("export one reconciled", Duration.ofSeconds(30),
                    () -> OperatorTestBed.export(client, ns, "one"), e -> e.getStatus() != null);
            Await.until("leader counts the export", Duration.ofSeconds(10), () -> exportsSeen(operators.get("first")), n -> n == 1);
            assertThat(exportsSeen(operators.get("second"))).as("the instance without the Lease reconciles nothing").isZero();
            assertThat(holder(client, leaseNs)).isEqualTo("first");

            operators.remove("first").close();
            Await.until("Lease taken over by second", Duration.ofSeconds(45), () -> holder(client, leaseNs), "second"::equals);
            createExport(client, ns, "two");
            NbdExport two = Await.until("export two reconciled by the new leader", Duration.ofSeconds(30),
                    () -> OperatorTestBed.export(client, ns, "two"), e -> e.getStatus() != null);
            assertThat(two.getStatus().condition("Ready").getReason()).isEqualTo("PersistentVolumeClaimNotFound");
            assertThat(exportsSeen(operators.get("second"))).isEqualTo(2);
        } finally {
            operators.values().forEach(KubeNbdOperator::close);
        }
    }
}
