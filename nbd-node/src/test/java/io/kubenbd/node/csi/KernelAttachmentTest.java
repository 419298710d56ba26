package io.kubenbd.node.csi;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * After a restart the plugin disconnects the /dev/nbdN its record names only while the device
 * still serves that volume, as the backend identifier the kernel shows in sysfs says; the
 * device may have been freed and attached for another volume meanwhile.
 */
class KernelAttachmentTest {
    @TempDir
    Path sysBlock;

    @Test
    void aDeviceIsTheVolumesOnlyWhileItsBackendIdentifierNamesIt() throws Exception {
        Path nbd3 = Files.createDirectories(sysBlock.resolve("nbd3"));
        Files.writeString(nbd3.resolve("backend"), KernelAttachment.backendIdentifier("apps/disk") + "\n");
        assertThat(KernelAttachment.servesVolume(sysBlock, Path.of("/dev/nbd3"), "apps/disk")).isTrue();
        assertThat(KernelAttachment.servesVolume(sysBlock, Path.of("/dev/nbd3"), "apps/disk-2")).isFalse();

        Files.writeString(nbd3.resolve("backend"), "kube-nbd:other/volume\n");
        assertThat(KernelAttachment.servesVolume(sysBlock, Path.of("/dev/nbd3"), "apps/disk")).isFalse();
        // Not connected: the kernel shows no backend file.
        Files.createDirectories(sysBlock.resolve("nbd4"));
        assertThat(KernelAttachment.servesVolume(sysBlock, Path.of("/dev/nbd4"), "apps/disk")).isFalse();
    }
}
