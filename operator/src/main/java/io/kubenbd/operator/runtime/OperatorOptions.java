package io.kubenbd.operator.runtime;

import io.kubenbd.operator.reconciler.ConsumerVolumePolicy;
import io.kubenbd.operator.reconciler.ServerSettings;

import java.util.Set;

/**
 * How one operator process runs.
 *
 * @param namespaces the namespaces to watch; empty means all
 * @param leaseNamespace where the leader-election Lease lives; null disables leader election
 * @param identity this instance's name in the Lease (the pod name in a cluster)
 * @param httpPort the port of /healthz, /readyz and /metrics; 0 picks a free one, negative disables it
 * @param exitOnLostLease end the process when the Lease is lost other than by stopping (a replica that is
 *                        not sure it leads must not go on reconciling; Kubernetes restarts it); off in-process
 * @param volumePolicy the class of the PersistentVolumes the operator writes and the namespaces they may be pre-bound to
 * @param controlCaNamespace the operator's own namespace, where it keeps the CA of the servers' control API
 */
public record OperatorOptions(Set<String> namespaces, ServerSettings server, String leaseNamespace, String leaseName,
                              String identity, String httpBind, int httpPort, int reconcileThreads, boolean exitOnLostLease,
                              ConsumerVolumePolicy volumePolicy, String controlCaNamespace) {
    public static final String DEFAULT_LEASE_NAME = "kube-nbd-operator";

    public OperatorOptions {
        namespaces = Set.copyOf(namespaces);
        java.util.Objects.requireNonNull(volumePolicy, "volumePolicy");
        java.util.Objects.requireNonNull(controlCaNamespace, "controlCaNamespace");
    }

    /** With the default volume policy: class kube-nbd, pre-bound only within the export's namespace. */
    public OperatorOptions(Set<String> namespaces, ServerSettings server, String leaseNamespace, String leaseName,
                           String identity, String httpBind, int httpPort, int reconcileThreads, boolean exitOnLostLease,
                           String controlCaNamespace) {
        this(namespaces, server, leaseNamespace, leaseName, identity, httpBind, httpPort, reconcileThreads, exitOnLostLease,
                ConsumerVolumePolicy.defaults(), controlCaNamespace);
    }
}
