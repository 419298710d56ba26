package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.PersistentVolumeClaim;
import io.fabric8.kubernetes.api.model.Pod;
import io.fabric8.kubernetes.api.model.Secret;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.kubenbd.operator.model.ExportPhase;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.model.TlsMode;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Comparator;
import java.util.List;
import java.util.regex.Pattern;

/**
 * What the CRD schema cannot check, checked before anything is created: the TLS Secret the spec
 * names (keys long enough, a CA where client certificates are required), the PVC (exists, its
 * volume mode fits {@code imagePath}), that nobody else writes to the volume (another NbdExport,
 * or a pod that is not this export's server), and that the PersistentVolume asked for stays
 * within the administrator's {@link ConsumerVolumePolicy}.
 */
final class ExportPreflight {
    static final String PVC_INDEX = "kubenbd.io/pvc";
    private static final Pattern PSK_LINE = Pattern.compile("^([^:\\s]+):((?:[0-9a-fA-F]{2})+)\\s*$");
    /** NIST's floor for a symmetric key; psktool and the generated Secret use 256 bits. */
    static final int MIN_PSK_BITS = 128;

    private ExportPreflight() {}

    /** The key under which exports and pods are indexed by the PVCs they use. */
    static String pvcKey(String namespace, String claim) {
        return namespace + "/" + claim;
    }

    static Finding secret(NbdExport export, Context<NbdExport> context) {
        var tls = export.getSpec().tlsOrDefault();
        String namespace = export.getMetadata().getNamespace();
        if (tls.modeOrDefault() == TlsMode.NONE) {
            return Finding.ok(ConditionTypes.SECRET_READY, "TlsDisabled", "tls.mode is none: clients connect without TLS");
        }
        if (tls.generatedSecret()) {
            String generated = ExportResources.generatedSecretName(export);
            // By name: the export's control TLS Secret is a secondary Secret too.
            return context.getSecondaryResourcesAsStream(Secret.class).anyMatch(s -> generated.equals(s.getMetadata().getName()))
                    ? Finding.ok(ConditionTypes.SECRET_READY, "Generated", "PSK generated in Secret " + generated)
                    : new Finding(ConditionTypes.SECRET_READY, false, "Generating",
                    "a random PSK is written to Secret " + generated + " once the volume is ready", null);
        }
        String name = tls.secretName();
        Secret secret = context.getClient().secrets().inNamespace(namespace).withName(name).get();
        if (secret == null) {
            return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "SecretNotFound",
                    "Secret " + name + " not found in namespace " + namespace + "; "
                            + (tls.modeOrDefault() == TlsMode.PSK
                            ? "create it with a keys.psk entry (psktool -u IDENTITY -p keys.psk) or leave tls.secretName empty to have one generated"
                            : "create a kubernetes.io/tls Secret with tls.crt and tls.key (and ca.crt to require client certificates)"));
        }
        var data = secret.getData() == null ? java.util.Map.<String, String>of() : secret.getData();
        if (tls.modeOrDefault() == TlsMode.PSK) {
            String encoded = data.get(ExportResources.PSK_KEY);
            if (encoded == null) {
                return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "SecretInvalid",
                        "Secret " + name + " has no " + ExportResources.PSK_KEY + " entry (lines of IDENTITY:HEXKEY, as psktool writes)");
            }
            List<String> lines = new String(Base64.getDecoder().decode(encoded), StandardCharsets.UTF_8).lines()
                    .filter(l -> !l.isBlank()).toList();
            if (lines.isEmpty()) {
                return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "SecretInvalid",
                        "Secret " + name + ": " + ExportResources.PSK_KEY + " is empty; it must hold IDENTITY:HEXKEY lines (psktool's format)");
            }
            for (int i = 0; i < lines.size(); i++) {
                // Never quote a line or its key; the identity before the colon is no secret (it is the URI's user part).
                var line = PSK_LINE.matcher(lines.get(i));
                if (!line.matches()) {
                    return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "SecretInvalid",
                            "Secret " + name + ": line " + (i + 1) + " of " + ExportResources.PSK_KEY
                                    + " is not IDENTITY:HEXKEY (psktool's format)");
                }
                int bits = line.group(2).length() * 4;
                if (bits < MIN_PSK_BITS) {
                    return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "PskTooShort",
                            "Secret " + name + ": the key of identity " + line.group(1) + " (line " + (i + 1) + " of "
                                    + ExportResources.PSK_KEY + ") has " + bits + " bits; at least " + MIN_PSK_BITS
                                    + " are needed, or the key can be guessed: write a new one with psktool -u "
                                    + line.group(1) + " -p keys.psk (256 bits), or leave tls.secretName empty to have one generated");
                }
            }
            return Finding.ok(ConditionTypes.SECRET_READY, "SecretFound", "PSK from Secret " + name);
        }
        if (!data.containsKey("tls.crt") || !data.containsKey("tls.key")) {
            return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "SecretInvalid",
                    "Secret " + name + " needs tls.crt and tls.key (a kubernetes.io/tls Secret)");
        }
        if (tls.clientCertificatesRequired() && !data.containsKey("ca.crt")) {
            return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "ClientCaMissing",
                    "Secret " + name + " has no ca.crt, so the server could not check client certificates and anyone who "
                            + "reaches the Service could read and write the volume: add the clients' CA as ca.crt, or set "
                            + "tls.clientAuthentication: None to serve without client authentication");
        }
        return Finding.ok(ConditionTypes.SECRET_READY, "SecretFound", "certificate from Secret " + name
                + (tls.clientCertificatesRequired() ? "; clients must present a certificate signed by its ca.crt" : ""));
    }

    /** Whether clients prove who they are: a warning in status, not a blocker, where the spec chose not to. */
    static Finding clientAuthentication(NbdExport export) {
        var tls = export.getSpec().tlsOrDefault();
        return switch (tls.modeOrDefault()) {
            case PSK -> Finding.ok(ConditionTypes.CLIENTS_AUTHENTICATED, "PreSharedKey",
                    "clients prove they hold the pre-shared key");
            case X509 -> tls.clientCertificatesRequired()
                    ? Finding.ok(ConditionTypes.CLIENTS_AUTHENTICATED, "ClientCertificate",
                    "clients present a certificate signed by the Secret's ca.crt")
                    : new Finding(ConditionTypes.CLIENTS_AUTHENTICATED, false, "NotRequired",
                    "tls.clientAuthentication is None: any client that reaches the Service can read and write the volume", null);
            case NONE -> new Finding(ConditionTypes.CLIENTS_AUTHENTICATED, false, "TlsDisabled",
                    "tls.mode is none: any client that reaches the Service can read and write the volume", null);
        };
    }

    /**
     * The PersistentVolume the spec asks for, against the administrator's policy: the operator's class only, and
     * pre-bound only to a claim of the export's namespace or an allowed consumer namespace. Null when none is asked for.
     */
    static Finding persistentVolume(NbdExport export, ConsumerVolumePolicy policy) {
        var pv = export.getSpec().persistentVolume();
        if (pv == null || !pv.createOrDefault()) {
            return null;
        }
        String namespace = export.getMetadata().getNamespace();
        if (pv.storageClassName() != null && !pv.storageClassName().equals(policy.storageClassName())) {
            return Finding.blocking(ConditionTypes.PERSISTENT_VOLUME_READY, ExportPhase.Failed, "StorageClassNotAllowed",
                    "persistentVolume.storageClassName " + pv.storageClassName() + " is not the operator's class "
                            + policy.storageClassName() + ": an export's volume may only be claimed as "
                            + policy.storageClassName() + " (so that claims of other classes never get it); "
                            + "remove storageClassName or set it to " + policy.storageClassName());
        }
        var claim = pv.claimRef();
        if (claim != null && !policy.allowsClaimIn(namespace, claim.namespace())) {
            return Finding.blocking(ConditionTypes.PERSISTENT_VOLUME_READY, ExportPhase.Failed, "ClaimNamespaceNotAllowed",
                    "persistentVolume.claimRef.namespace " + claim.namespace() + " is not the export's namespace " + namespace
                            + ": a volume is pre-bound only to claims of its own namespace, or of the namespaces the "
                            + "cluster administrator allows (--persistent-volume-consumer-namespaces: "
                            + policy.consumerNamespacesForMessage() + "); claim it from " + namespace
                            + " or ask the administrator to allow " + claim.namespace());
        }
        return Finding.ok(ConditionTypes.PERSISTENT_VOLUME_READY, "Allowed", "PersistentVolume "
                + ExportResources.persistentVolumeName(export) + " of class " + policy.storageClassName()
                + (claim == null ? ", for a claim that names it (volumeName) or asks for the class"
                : ", pre-bound to claim " + claim.namespace() + "/" + claim.name()));
    }

    /**
     * @param pods the pods using the export's PVC, from the pod informer's index
     */
    static Finding volume(NbdExport export, Context<NbdExport> context, List<Pod> pods) {
        var source = export.getSpec().source();
        String namespace = export.getMetadata().getNamespace();
        String claim = source.persistentVolumeClaim();
        PersistentVolumeClaim pvc = context.getSecondaryResource(PersistentVolumeClaim.class).orElse(null);
        if (pvc == null) {
            return Finding.blocking(ConditionTypes.VOLUME_READY, ExportPhase.Pending, "PersistentVolumeClaimNotFound",
                    "PersistentVolumeClaim " + claim + " not found in namespace " + namespace
                            + "; the server starts once it exists");
        }
        boolean block = "Block".equals(pvc.getSpec().getVolumeMode());
        boolean hasImage = source.imagePath() != null && !source.imagePath().isEmpty();
        if (block && hasImage) {
            return Finding.blocking(ConditionTypes.VOLUME_READY, ExportPhase.Failed, "ImagePathNotAllowed",
                    "PersistentVolumeClaim " + claim + " is a Block volume, exported whole; remove source.imagePath");
        }
        if (!block && !hasImage) {
            return Finding.blocking(ConditionTypes.VOLUME_READY, ExportPhase.Failed, "ImagePathRequired",
                    "PersistentVolumeClaim " + claim + " is a Filesystem volume; set source.imagePath to the image file on it");
        }
        boolean writable = !export.getSpec().readOnlyOrDefault();
        String key = pvcKey(namespace, claim);
        NbdExport earlier = context.getPrimaryCache().byIndex(PVC_INDEX, key).stream()
                .filter(other -> !other.getMetadata().getName().equals(export.getMetadata().getName()))
                .filter(other -> writable || !other.getSpec().readOnlyOrDefault())
                .filter(other -> ExportPreflight.OLDEST_FIRST.compare(other, export) < 0)
                .min(OLDEST_FIRST).orElse(null);
        if (earlier != null) {
            return Finding.blocking(ConditionTypes.VOLUME_READY, ExportPhase.Failed, "VolumeInUse",
                    "PersistentVolumeClaim " + claim + " is already exported by NbdExport " + earlier.getMetadata().getName()
                            + "; two servers with a writer among them would corrupt it (make both readOnly, or delete one)");
        }
        boolean serverExists = context.getSecondaryResource(StatefulSet.class).isPresent();
        Pod foreign = serverExists ? null : pods.stream()
                .filter(p -> !export.getMetadata().getName().equals(labelOf(p, ExportResources.EXPORT_LABEL)))
                .filter(p -> p.getStatus() == null || !List.of("Succeeded", "Failed").contains(p.getStatus().getPhase()))
                .filter(p -> writable || !readOnlyUse(p, claim))
                .findFirst().orElse(null);
        if (foreign != null) {
            return Finding.blocking(ConditionTypes.VOLUME_READY, ExportPhase.Failed, "VolumeInUse",
                    "PersistentVolumeClaim " + claim + " is in use by pod " + foreign.getMetadata().getName()
                            + "; the server would be a second writer. It starts when that pod is gone"
                            + (writable ? " (or set readOnly: true if both only read)" : ""));
        }
        return Finding.ok(ConditionTypes.VOLUME_READY, block ? "BlockVolume" : "FilesystemVolume",
                "PersistentVolumeClaim " + claim + (block ? " (Block)" : " (Filesystem, image " + source.imagePath() + ")"));
    }

    static final Comparator<NbdExport> OLDEST_FIRST = Comparator
            .comparing((NbdExport e) -> e.getMetadata().getCreationTimestamp() == null ? "" : e.getMetadata().getCreationTimestamp())
            .thenComparing(e -> e.getMetadata().getName());

    private static String labelOf(Pod pod, String label) {
        var labels = pod.getMetadata().getLabels();
        return labels == null ? null : labels.get(label);
    }

    private static boolean readOnlyUse(Pod pod, String claim) {
        return pod.getSpec().getVolumes().stream()
                .filter(v -> v.getPersistentVolumeClaim() != null && claim.equals(v.getPersistentVolumeClaim().getClaimName()))
                .allMatch(v -> Boolean.TRUE.equals(v.getPersistentVolumeClaim().getReadOnly()));
    }

    /** The PVCs a pod mounts, as index keys. */
    static List<String> claimKeys(Pod pod) {
        if (pod.getSpec() == null || pod.getSpec().getVolumes() == null) {
            return List.of();
        }
        return pod.getSpec().getVolumes().stream()
                .filter(v -> v.getPersistentVolumeClaim() != null)
                .map(v -> pvcKey(pod.getMetadata().getNamespace(), v.getPersistentVolumeClaim().getClaimName()))
                .toList();
    }
}
