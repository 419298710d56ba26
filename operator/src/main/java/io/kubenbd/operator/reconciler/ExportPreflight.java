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
 * names, the PVC (exists, its volume mode fits {@code imagePath}) and that nobody else writes to
 * the volume (another NbdExport, or a pod that is not this export's server).
 */
final class ExportPreflight {
    static final String PVC_INDEX = "kubenbd.io/pvc";
    private static final Pattern PSK_LINE = Pattern.compile("^[^:\\s]+:([0-9a-fA-F]{2})+\\s*$");

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
            String firstLine = new String(Base64.getDecoder().decode(encoded), StandardCharsets.UTF_8).lines()
                    .filter(l -> !l.isBlank()).findFirst().orElse("");
            if (!PSK_LINE.matcher(firstLine).matches()) {
                // Never quote the line: it holds the key.
                return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "SecretInvalid",
                        "Secret " + name + ": " + ExportResources.PSK_KEY + " must hold IDENTITY:HEXKEY lines (psktool's format)");
            }
            return Finding.ok(ConditionTypes.SECRET_READY, "SecretFound", "PSK from Secret " + name);
        }
        if (!data.containsKey("tls.crt") || !data.containsKey("tls.key")) {
            return Finding.blocking(ConditionTypes.SECRET_READY, ExportPhase.Failed, "SecretInvalid",
                    "Secret " + name + " needs tls.crt and tls.key (a kubernetes.io/tls Secret)");
        }
        return Finding.ok(ConditionTypes.SECRET_READY, "SecretFound", "certificate from Secret " + name
                + (data.containsKey("ca.crt") ? "; clients must present a certificate signed by its ca.crt" : ""));
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
