package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.Container;
import io.fabric8.kubernetes.api.model.ContainerBuilder;
import io.fabric8.kubernetes.api.model.EnvVarBuilder;
import io.fabric8.kubernetes.api.model.PodSecurityContextBuilder;
import io.fabric8.kubernetes.api.model.PodTemplateSpec;
import io.fabric8.kubernetes.api.model.PodTemplateSpecBuilder;
import io.fabric8.kubernetes.api.model.Quantity;
import io.fabric8.kubernetes.api.model.ResourceRequirementsBuilder;
import io.fabric8.kubernetes.api.model.SecurityContextBuilder;
import io.fabric8.kubernetes.api.model.Volume;
import io.fabric8.kubernetes.api.model.VolumeBuilder;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.model.TlsMode;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The pod that runs {@code nbd-node serve} for one export. The command line is the whole
 * configuration: the export, TLS files from the mounted Secret, the control API for the
 * operator (mutual TLS with the certificate from the control TLS Secret). The server binds the pod IP (from the downward API, expanded by the kubelet as
 * {@code $(POD_IP)}), so nothing listens on other interfaces.
 */
public final class ServerPodTemplate {
    /** The launcher of nbd-node in the image. */
    public static final String COMMAND = "/opt/kube-nbd/bin/nbd-node";
    public static final String CONTAINER = "nbd-server";
    public static final String DATA_VOLUME = "data";
    public static final String TLS_VOLUME = "tls";
    public static final String STATE_VOLUME = "state";
    public static final String TMP_VOLUME = "tmp";
    public static final String CONTROL_TLS_VOLUME = "control-tls";
    /** Where a Filesystem PVC is mounted. */
    public static final String DATA_MOUNT = "/data";
    /** Where a Block PVC's device appears. */
    public static final String DEVICE_PATH = "/dev/kube-nbd/volume";
    public static final String TLS_MOUNT = "/var/run/kube-nbd/tls";
    /** The control API's certificate, key and the CA of its clients (the operator). */
    public static final String CONTROL_TLS_MOUNT = "/var/run/kube-nbd/control-tls";
    /** Bitmaps of block-device exports (a Filesystem export keeps them next to its image). */
    public static final String STATE_MOUNT = "/var/lib/kube-nbd";
    private static final long NON_ROOT_ID = 65532;

    private ServerPodTemplate() {}

    /**
     * @param blockVolume whether the PVC is a Block volume (else Filesystem with an image file)
     * @param tlsCa whether the X.509 Secret has a {@code ca.crt}, making the server ask clients for certificates
     */
    public static PodTemplateSpec build(NbdExport export, ServerSettings settings, boolean blockVolume, boolean tlsCa) {
        var spec = export.getSpec();
        String tlsSecret = ExportResources.tlsSecretName(export);
        List<Volume> volumes = new ArrayList<>();
        volumes.add(new VolumeBuilder().withName(DATA_VOLUME).withNewPersistentVolumeClaim()
                .withClaimName(spec.source().persistentVolumeClaim()).withReadOnly(spec.readOnlyOrDefault())
                .endPersistentVolumeClaim().build());
        if (tlsSecret != null) {
            volumes.add(new VolumeBuilder().withName(TLS_VOLUME).withNewSecret().withSecretName(tlsSecret)
                    .withDefaultMode(0440).endSecret().build());
        }
        volumes.add(new VolumeBuilder().withName(CONTROL_TLS_VOLUME).withNewSecret()
                .withSecretName(ExportResources.controlTlsSecretName(export)).withDefaultMode(0440).endSecret().build());
        // The root filesystem is read-only; the JVM and netty's native transport need a /tmp.
        volumes.add(new VolumeBuilder().withName(TMP_VOLUME).withNewEmptyDir().withSizeLimit(new Quantity("64Mi"))
                .endEmptyDir().build());
        if (blockVolume) {
            volumes.add(new VolumeBuilder().withName(STATE_VOLUME).withNewEmptyDir().endEmptyDir().build());
        }
        return new PodTemplateSpecBuilder()
                .withNewMetadata().withLabels(ExportResources.labels(export)).endMetadata()
                .withNewSpec()
                .withContainers(container(export, settings, blockVolume, tlsCa))
                .withVolumes(volumes)
                .withTerminationGracePeriodSeconds(30L)
                .withEnableServiceLinks(false)
                .withAutomountServiceAccountToken(false)
                .withSecurityContext(blockVolume
                        // A block device node is root's; reading it needs uid 0 (no capabilities). Said
                        // explicitly: the image's default user is the unprivileged 65532.
                        ? new PodSecurityContextBuilder().withRunAsUser(0L).withRunAsGroup(0L)
                                .withNewSeccompProfile().withType("RuntimeDefault").endSeccompProfile().build()
                        : new PodSecurityContextBuilder().withRunAsNonRoot(true).withRunAsUser(NON_ROOT_ID)
                                .withRunAsGroup(NON_ROOT_ID).withFsGroup(NON_ROOT_ID).withFsGroupChangePolicy("OnRootMismatch")
                                .withNewSeccompProfile().withType("RuntimeDefault").endSeccompProfile().build())
                .endSpec()
                .build();
    }

    /** The arguments after the command: what {@code nbd-node serve} is told. */
    public static List<String> args(NbdExport export, ServerSettings settings, boolean blockVolume, boolean tlsCa) {
        var spec = export.getSpec();
        StringBuilder exportArg = new StringBuilder(export.exportName()).append('=')
                .append(blockVolume ? DEVICE_PATH : DATA_MOUNT + "/" + spec.source().imagePath());
        if (spec.readOnlyOrDefault()) {
            exportArg.append(",readonly");
        }
        exportArg.append(",max-connections=").append(spec.maxConnectionsOrDefault());
        if (spec.metaContexts() != null) {
            spec.metaContexts().forEach(context -> exportArg.append(",context=").append(context.wireName()));
        }
        List<String> args = new ArrayList<>(List.of("serve",
                "--bind", "$(POD_IP)", "--port", Integer.toString(spec.serviceOrDefault().portOrDefault()),
                "--export", exportArg.toString(),
                "--control", "$(POD_IP):" + settings.controlPort(),
                "--control-tls-cert", CONTROL_TLS_MOUNT + "/tls.crt", "--control-tls-key", CONTROL_TLS_MOUNT + "/tls.key",
                "--control-tls-ca", CONTROL_TLS_MOUNT + "/ca.crt"));
        switch (spec.tlsOrDefault().modeOrDefault()) {
            case NONE -> args.addAll(List.of("--tls", "off"));
            case PSK -> args.addAll(List.of("--tls", "require", "--tls-psk", TLS_MOUNT + "/" + ExportResources.PSK_KEY));
            case X509 -> {
                args.addAll(List.of("--tls", "require", "--tls-cert", TLS_MOUNT + "/tls.crt", "--tls-key", TLS_MOUNT + "/tls.key"));
                if (tlsCa) {
                    args.addAll(List.of("--tls-ca", TLS_MOUNT + "/ca.crt"));
                }
            }
        }
        if (blockVolume) {
            args.addAll(List.of("--state-dir", STATE_MOUNT));
        }
        return args;
    }

    private static Container container(NbdExport export, ServerSettings settings, boolean blockVolume, boolean tlsCa) {
        var spec = export.getSpec();
        var builder = new ContainerBuilder()
                .withName(CONTAINER)
                .withImage(settings.image())
                .withImagePullPolicy(settings.imagePullPolicy())
                .withCommand(COMMAND)
                .withArgs(args(export, settings, blockVolume, tlsCa))
                .withEnv(new EnvVarBuilder().withName("POD_IP").withNewValueFrom().withNewFieldRef()
                                .withFieldPath("status.podIP").endFieldRef().endValueFrom().build(),
                        new EnvVarBuilder().withName("JDK_JAVA_OPTIONS").withValue(settings.javaOptions()).build())
                .addNewPort().withName("nbd").withContainerPort(spec.serviceOrDefault().portOrDefault()).withProtocol("TCP").endPort()
                .addNewPort().withName("control").withContainerPort(settings.controlPort()).withProtocol("TCP").endPort()
                // The control port answers as soon as the exports are open; probing it leaves no NBD handshake noise.
                .withNewReadinessProbe().withNewTcpSocket().withNewPort("control").endTcpSocket()
                .withPeriodSeconds(5).endReadinessProbe()
                .withNewLivenessProbe().withNewTcpSocket().withNewPort("control").endTcpSocket()
                .withInitialDelaySeconds(20).withPeriodSeconds(10).withFailureThreshold(3).endLivenessProbe()
                // The last lines of the server's log become the termination message: a bad image path shows up in status.
                .withTerminationMessagePolicy("FallbackToLogsOnError")
                .withResources(new ResourceRequirementsBuilder()
                        .withRequests(Map.of("cpu", new Quantity("100m"), "memory", new Quantity("192Mi")))
                        .withLimits(Map.of("memory", new Quantity("1536Mi")))
                        .build())
                .withSecurityContext(new SecurityContextBuilder().withAllowPrivilegeEscalation(false)
                        .withReadOnlyRootFilesystem(true).withNewCapabilities().withDrop("ALL").endCapabilities().build());
        builder.addNewVolumeMount().withName(TMP_VOLUME).withMountPath("/tmp").endVolumeMount();
        builder.addNewVolumeMount().withName(CONTROL_TLS_VOLUME).withMountPath(CONTROL_TLS_MOUNT).withReadOnly(true).endVolumeMount();
        if (blockVolume) {
            builder.addNewVolumeDevice().withName(DATA_VOLUME).withDevicePath(DEVICE_PATH).endVolumeDevice();
            builder.addNewVolumeMount().withName(STATE_VOLUME).withMountPath(STATE_MOUNT).endVolumeMount();
        } else {
            builder.addNewVolumeMount().withName(DATA_VOLUME).withMountPath(DATA_MOUNT)
                    .withReadOnly(spec.readOnlyOrDefault()).endVolumeMount();
        }
        if (spec.tlsOrDefault().modeOrDefault() != TlsMode.NONE) {
            builder.addNewVolumeMount().withName(TLS_VOLUME).withMountPath(TLS_MOUNT).withReadOnly(true).endVolumeMount();
        }
        return builder.build();
    }
}
