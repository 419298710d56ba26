package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.ObjectMeta;
import io.fabric8.kubernetes.api.model.ObjectMetaBuilder;
import io.kubenbd.operator.model.NbdExport;

import java.util.Map;

/**
 * Names and labels of what the operator creates for one export, in one place so that the
 * dependents, the event source mappers and the tests agree on them.
 */
public final class ExportResources {
    public static final String MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
    public static final String MANAGED_BY = "kube-nbd-operator";
    /** On every object made for an export, and on its server pod: the export's name. */
    public static final String EXPORT_LABEL = "kubenbd.io/export";
    /** The key of the PSK Secret's data: psktool's "identity:hexkey" line, the file qemu and libnbd read. */
    public static final String PSK_KEY = "keys.psk";
    public static final String CSI_DRIVER = "nbd.csi.kubenbd.io";

    private ExportResources() {}

    /** The Service: named like the export, so the endpoint reads {@code nbds://NAME.NAMESPACE.svc}. */
    public static String serviceName(NbdExport export) {
        return export.getMetadata().getName();
    }

    public static String statefulSetName(NbdExport export) {
        return export.getMetadata().getName() + "-nbd";
    }

    /** The single pod the StatefulSet runs. */
    public static String serverPodName(NbdExport export) {
        return statefulSetName(export) + "-0";
    }

    /** The PSK Secret the operator generates when the spec names none. */
    public static String generatedSecretName(NbdExport export) {
        return export.getMetadata().getName() + "-psk";
    }

    /** The Secret the server reads its key or certificate from; null without TLS. */
    public static String tlsSecretName(NbdExport export) {
        var tls = export.getSpec().tlsOrDefault();
        return switch (tls.modeOrDefault()) {
            case NONE -> null;
            case PSK -> tls.generatedSecret() ? generatedSecretName(export) : tls.secretName();
            case X509 -> tls.secretName();
        };
    }

    /** The Secret with the server's control API certificate and key and the control CA's certificate. */
    public static String controlTlsSecretName(NbdExport export) {
        return export.getMetadata().getName() + "-control-tls";
    }

    /**
     * The name in the server's control API certificate, which the operator checks when it calls
     * the pod's IP: one name per export, so a certificate of one server does not pass for another's.
     */
    public static String controlServerName(NbdExport export) {
        return export.getMetadata().getName() + "." + export.getMetadata().getNamespace() + ".control.kubenbd.io";
    }

    /**
     * PersistentVolumes are cluster-scoped, so the name must tell exports of all namespaces apart. Namespace and
     * name joined by any character that may appear in either collide ({@code team-a/db} and {@code team/a-db});
     * the export's UID never does, and a re-created export gets a new volume rather than an old one's binding.
     */
    public static String persistentVolumeName(NbdExport export) {
        return "nbdexport-" + export.getMetadata().getUid();
    }

    public static String serviceHost(NbdExport export) {
        return serviceName(export) + "." + export.getMetadata().getNamespace() + ".svc";
    }

    /** Metadata of a namespaced object made for the export: its name, the export's namespace, the labels. */
    public static ObjectMeta metadata(NbdExport export, String name) {
        return new ObjectMetaBuilder().withName(name).withNamespace(export.getMetadata().getNamespace())
                .withLabels(labels(export)).build();
    }

    /** Labels of the objects made for the export (and the selector of its server pod). */
    public static Map<String, String> labels(NbdExport export) {
        return Map.of(MANAGED_BY_LABEL, MANAGED_BY,
                "app.kubernetes.io/component", "nbd-server",
                EXPORT_LABEL, export.getMetadata().getName());
    }
}
