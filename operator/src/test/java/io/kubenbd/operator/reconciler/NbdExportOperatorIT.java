package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.client.KubernetesClient;
import io.kubenbd.operator.testing.KubeTestCluster;

/** The operator's scenarios with the cluster admin's client and no leader election. */
class NbdExportOperatorIT extends OperatorScenarios {
    @Override
    KubernetesClient operatorClient(KubeTestCluster cluster) {
        return cluster.client();
    }

    @Override
    String leaseNamespace(KubeTestCluster cluster) {
        return null;
    }
}
