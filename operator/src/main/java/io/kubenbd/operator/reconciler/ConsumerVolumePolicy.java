package io.kubenbd.operator.reconciler;

import java.util.Set;
import java.util.TreeSet;

/**
 * Which claims an export's PersistentVolume may be offered to, set by the cluster administrator
 * (operator flags), not by the tenant who writes the NbdExport: every such volume gets the
 * operator's storage class, and may be pre-bound only to a claim in the export's own namespace or
 * in one of {@code consumerNamespaces}. A PersistentVolume carries the export's endpoint and key
 * reference, so whoever binds it reads and writes the tenant's data, and a tenant who could name
 * any class or namespace could hand its server to another tenant's pending claim and read what
 * that tenant then writes.
 *
 * @param storageClassName   the class of every PersistentVolume the operator writes
 * @param consumerNamespaces namespaces whose claims any export may pre-bind its volume to, besides its own
 */
public record ConsumerVolumePolicy(String storageClassName, Set<String> consumerNamespaces) {
    public static final String DEFAULT_STORAGE_CLASS = "kube-nbd";

    public ConsumerVolumePolicy {
        consumerNamespaces = Set.copyOf(consumerNamespaces);
    }

    public static ConsumerVolumePolicy defaults() {
        return new ConsumerVolumePolicy(DEFAULT_STORAGE_CLASS, Set.of());
    }

    /** Whether an export in {@code exportNamespace} may pre-bind its volume to a claim in {@code claimNamespace}. */
    public boolean allowsClaimIn(String exportNamespace, String claimNamespace) {
        return exportNamespace.equals(claimNamespace) || consumerNamespaces.contains(claimNamespace);
    }

    /** The allowed namespaces besides the export's own, for messages: sorted, or "none". */
    String consumerNamespacesForMessage() {
        return consumerNamespaces.isEmpty() ? "none" : String.join(", ", new TreeSet<>(consumerNamespaces));
    }
}
