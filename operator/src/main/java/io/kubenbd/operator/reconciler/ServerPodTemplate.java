package io.kubenbd.operator.reconciler;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLGenerator;
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
import io.kubenbd.operator.model.MetaContextName;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.model.TlsMode;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The pod that runs {@code nbd-node serve} for one export. The export (name, path, options) is a
 * YAML file the server reads with {@code --config}, never an {@code --export NAME=PATH,KEY=VALUE}
 * string: that form is parsed at commas, so a tenant's path could add options such as
 * {@code backing=} or {@code format=}. The YAML is an annotation of the pod template, written out
 * by the downward API, so a change of it is a new template revision and rolls the pod like any
 * other spec change. The command line holds what the operator alone decides: TLS files from the
 * mounted Secret and the control API (mutual TLS with the certificate from the control TLS
 * Secret). The server binds the pod IP (from the downward API, expanded by the kubelet as
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
    public static final String CONFIG_VOLUME = "config";
    /** The pod template annotation that holds the server's export configuration (YAML). */
    public static final String CONFIG_ANNOTATION = "kubenbd.io/serve-config";
    /** Where the downward API writes that annotation out for {@code --config}. */
    public static final String CONFIG_FILE = "/etc/kube-nbd/serve.yaml";
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
    private static final ObjectMapper CONFIG_YAML = new ObjectMapper(new YAMLFactory()
            .disable(YAMLGenerator.Feature.WRITE_DOC_START_MARKER));

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
        volumes.add(new VolumeBuilder().withName(CONFIG_VOLUME).withNewDownwardAPI().withDefaultMode(0444)
                .addNewItem().withPath(Path.of(CONFIG_FILE).getFileName().toString()).withNewFieldRef()
                .withFieldPath("metadata.annotations['" + CONFIG_ANNOTATION + "']").endFieldRef().endItem()
                .endDownwardAPI().build());
        // The root filesystem is read-only; the JVM and netty's native transport need a /tmp.
        volumes.add(new VolumeBuilder().withName(TMP_VOLUME).withNewEmptyDir().withSizeLimit(new Quantity("64Mi"))
                .endEmptyDir().build());
        if (blockVolume) {
            volumes.add(new VolumeBuilder().withName(STATE_VOLUME).withNewEmptyDir().endEmptyDir().build());
        }
        return new PodTemplateSpecBuilder()
                .withNewMetadata().withLabels(ExportResources.labels(export))
                .withAnnotations(Map.of(CONFIG_ANNOTATION, serveConfig(export, blockVolume))).endMetadata()
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

    /**
     * The export as {@code nbd-node serve --config} reads it: each value one YAML scalar, written by a YAML
     * serializer, so no character of a name or path can become another key.
     */
    public static String serveConfig(NbdExport export, boolean blockVolume) {
        var spec = export.getSpec();
        Map<String, Object> entry = new LinkedHashMap<>();
        entry.put("name", export.exportName());
        entry.put("path", blockVolume ? DEVICE_PATH : DATA_MOUNT + "/" + spec.source().imagePath());
        entry.put("readonly", spec.readOnlyOrDefault());
        entry.put("max-connections", spec.maxConnectionsOrDefault());
        if (spec.metaContexts() != null) {
            entry.put("context", spec.metaContexts().stream().map(MetaContextName::wireName).toList());
        }
        try {
            return CONFIG_YAML.writeValueAsString(Map.of("exports", List.of(entry)));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot write the server configuration of " + export.exportName(), e);
        }
    }

    /** The arguments after the command: what {@code nbd-node serve} is told besides its config file. */
    public static List<String> args(NbdExport export, ServerSettings settings, boolean blockVolume, boolean tlsCa) {
        var spec = export.getSpec();
        List<String> args = new ArrayList<>(List.of("serve",
                "--bind", "$(POD_IP)", "--port", Integer.toString(spec.serviceOrDefault().portOrDefault()),
                "--config", CONFIG_FILE,
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
        builder.addNewVolumeMount().withName(CONFIG_VOLUME).withMountPath(Path.of(CONFIG_FILE).getParent().toString())
                .withReadOnly(true).endVolumeMount();
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
