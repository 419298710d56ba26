package io.kubenbd.operator.reconciler;

import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.model.NbdExportSpec;
import io.fabric8.kubernetes.api.model.ObjectMetaBuilder;
import io.fabric8.kubernetes.client.utils.Serialization;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** The server's command line and pod shape for each volume mode and TLS mode. */
class ServerPodTemplateTest {
    private static final ServerSettings SETTINGS = ServerSettings.defaults();

    private static NbdExport export(String specYaml) {
        NbdExport export = new NbdExport();
        export.setMetadata(new ObjectMetaBuilder().withName("vm").withNamespace("ns").build());
        // A leading comment keeps the flow-style YAML from being taken for JSON.
        export.setSpec(Serialization.unmarshal("# spec\n" + specYaml, NbdExportSpec.class));
        return export;
    }

    @Test
    void filesystemVolumeWithGeneratedPskServesTheImageOnThePodIp() {
        NbdExport export = export("{source: {persistentVolumeClaim: pvc, imagePath: dir/disk.img}, maxConnections: 4}");
        assertThat(ServerPodTemplate.args(export, SETTINGS, false, false)).containsExactly(
                "serve", "--bind", "$(POD_IP)", "--port", "10809", "--config", "/etc/kube-nbd/serve.yaml",
                "--control", "$(POD_IP):10810", "--control-tls-cert", "/var/run/kube-nbd/control-tls/tls.crt",
                "--control-tls-key", "/var/run/kube-nbd/control-tls/tls.key", "--control-tls-ca", "/var/run/kube-nbd/control-tls/ca.crt",
                "--tls", "require", "--tls-psk", "/var/run/kube-nbd/tls/keys.psk");
        assertThat(exportConfig(export, false)).isEqualTo(Map.of(
                "name", "vm", "path", "/data/dir/disk.img", "readonly", false, "max-connections", 4));
        var pod = ServerPodTemplate.build(export, SETTINGS, false, false).getSpec();
        assertThat(pod.getSecurityContext().getRunAsNonRoot()).isTrue();
        assertThat(pod.getVolumes()).filteredOn(v -> v.getSecret() != null).extracting(v -> v.getSecret().getSecretName())
                .containsExactly("vm-psk", "vm-control-tls");
        assertThat(pod.getContainers().getFirst().getVolumeMounts())
                .anySatisfy(m -> assertThat(m.getMountPath() + m.getReadOnly()).isEqualTo("/datafalse"));
    }

    @Test
    void blockVolumeReadOnlyWithoutTlsUsesTheDeviceAndAStateDir() {
        NbdExport export = export("{source: {persistentVolumeClaim: pvc}, readOnly: true, exportName: disk0, "
                + "tls: {mode: none}, service: {port: 10900}, metaContexts: [qemu:allocation-depth]}");
        assertThat(ServerPodTemplate.args(export, SETTINGS, true, false)).containsExactly(
                "serve", "--bind", "$(POD_IP)", "--port", "10900", "--config", "/etc/kube-nbd/serve.yaml",
                "--control", "$(POD_IP):10810", "--control-tls-cert", "/var/run/kube-nbd/control-tls/tls.crt",
                "--control-tls-key", "/var/run/kube-nbd/control-tls/tls.key", "--control-tls-ca", "/var/run/kube-nbd/control-tls/ca.crt",
                "--tls", "off", "--state-dir", "/var/lib/kube-nbd");
        assertThat(exportConfig(export, true)).isEqualTo(Map.of("name", "disk0", "path", "/dev/kube-nbd/volume",
                "readonly", true, "max-connections", 8, "context", List.of("qemu:allocation-depth")));
        var pod = ServerPodTemplate.build(export, SETTINGS, true, false).getSpec();
        var container = pod.getContainers().getFirst();
        assertThat(container.getVolumeDevices()).singleElement()
                .satisfies(d -> assertThat(d.getDevicePath()).isEqualTo("/dev/kube-nbd/volume"));
        assertThat(pod.getVolumes()).filteredOn(v -> v.getSecret() != null).extracting(v -> v.getSecret().getSecretName())
                .as("the control API's certificate only").containsExactly("vm-control-tls");
        assertThat(pod.getVolumes().getFirst().getPersistentVolumeClaim().getReadOnly()).isTrue();
        assertThat(pod.getSecurityContext().getRunAsUser()).as("the device node is root's; the image's user is 65532").isZero();
    }

    /** The one export of the server's config file, as nbd-node reads it (YAML). */
    private static Map<?, ?> exportConfig(NbdExport export, boolean block) {
        @SuppressWarnings("unchecked")
        Map<String, Object> config = Serialization.unmarshal(ServerPodTemplate.serveConfig(export, block), Map.class);
        assertThat(config).containsOnlyKeys("exports");
        return (Map<?, ?>) ((List<?>) config.get("exports")).getFirst();
    }

    /**
     * Had the API server let a comma or a newline through, it would still be part of the path: the config is one
     * YAML value per field, not a string the server splits into options.
     */
    @Test
    void aPathWithCommasAndNewlinesStaysOnePathInTheConfig() {
        NbdExport export = export("{source: {persistentVolumeClaim: pvc, imagePath: \"d.img,backing=/etc/passwd\\nformat: raw\"}}");
        assertThat(exportConfig(export, false)).isEqualTo(Map.of("name", "vm",
                "path", "/data/d.img,backing=/etc/passwd\nformat: raw", "readonly", false, "max-connections", 8));
        var template = ServerPodTemplate.build(export, SETTINGS, false, false);
        assertThat(template.getSpec().getContainers().getFirst().getArgs()).noneMatch(a -> a.contains("passwd"));
        assertThat(template.getMetadata().getAnnotations()).containsKey(ServerPodTemplate.CONFIG_ANNOTATION);
        assertThat(template.getSpec().getVolumes()).filteredOn(v -> v.getDownwardAPI() != null).singleElement()
                .satisfies(v -> assertThat(v.getDownwardAPI().getItems().getFirst().getFieldRef().getFieldPath())
                        .isEqualTo("metadata.annotations['kubenbd.io/serve-config']"));
    }

    @Test
    void x509WithCaAsksClientsForCertificates() {
        NbdExport export = export("{source: {persistentVolumeClaim: pvc, imagePath: d.img}, tls: {mode: x509, secretName: certs}}");
        assertThat(ServerPodTemplate.args(export, SETTINGS, false, true)).containsSequence(
                "--tls", "require", "--tls-cert", "/var/run/kube-nbd/tls/tls.crt", "--tls-key", "/var/run/kube-nbd/tls/tls.key",
                "--tls-ca", "/var/run/kube-nbd/tls/ca.crt");
        assertThat(ServerPodTemplate.args(export, SETTINGS, false, false)).doesNotContain("--tls-ca");
        assertThat(ServerPodTemplate.build(export, SETTINGS, false, true).getSpec().getVolumes())
                .filteredOn(v -> v.getSecret() != null).extracting(v -> v.getSecret().getSecretName())
                .containsExactly("certs", "vm-control-tls");
    }

    @Test
    void theControlApiGetsItsCertificateFromTheControlTlsSecretReadOnly() {
        NbdExport export = export("{source: {persistentVolumeClaim: pvc, imagePath: d.img}}");
        var pod = ServerPodTemplate.build(export, SETTINGS, false, false).getSpec();
        assertThat(pod.getVolumes()).filteredOn(v -> v.getName().equals("control-tls")).singleElement()
                .satisfies(v -> {
                    assertThat(v.getSecret().getSecretName()).isEqualTo("vm-control-tls");
                    assertThat(v.getSecret().getDefaultMode()).isEqualTo(0440);
                });
        assertThat(pod.getContainers().getFirst().getVolumeMounts()).filteredOn(m -> m.getName().equals("control-tls"))
                .singleElement().satisfies(m -> {
                    assertThat(m.getMountPath()).isEqualTo("/var/run/kube-nbd/control-tls");
                    assertThat(m.getReadOnly()).isTrue();
                });
    }
}
