package io.kubenbd.node.csi;

import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * {@link DeviceContents#probe} on loop devices over small images: only an image with no
 * signature and zeros at both ends is blank; each other kind is named.
 */
class DeviceContentsIT {
    private static final long SIZE = 8L << 20;
    private ScratchDir dir;

    @BeforeEach
    void createDir() throws Exception {
        PeerCommand.requireInstalled("losetup", "blkid", "mkfs.ext4", "mkswap");
        dir = ScratchDir.create("device-contents");
    }

    @AfterEach
    void releaseLoopDevices() throws Exception {
        try {
            NodeLeftovers.release(dir.path());
        } finally {
            dir.close();
        }
    }

    private interface ImageWriter {
        void write(Path image) throws Exception;
    }

    /** Probes a loop device over an image of {@link #SIZE} bytes that {@code writer} filled. */
    private DeviceContents probe(String name, ImageWriter writer) throws Exception {
        Path image = dir.sparseFile(name + ".img", SIZE);
        writer.write(image);
        String loop = PeerCommand.run(Duration.ofSeconds(10), "losetup", "--find", "--show", image.toString())
                .assertSuccess().stdout().strip();
        try {
            return DeviceContents.probe(Path.of(loop));
        } finally {
            PeerCommand.run(Duration.ofSeconds(10), "losetup", "-d", loop).assertSuccess();
        }
    }

    private static void mkfs(Path image, String... argv) throws Exception {
        PeerCommand.run(Duration.ofSeconds(30), argv).assertSuccess();
    }

    @Test
    void onlyAnAllZeroImageWithoutSignaturesIsBlank() throws Exception {
        assertThat(probe("blank", image -> {})).isEqualTo(new DeviceContents.Blank());
        // Zeros at both ends, data in the middle only: nothing any signature could be in.
        assertThat(probe("middle", image -> ScratchDir.writeAt(image, SIZE / 2, new byte[] {1})))
                .isEqualTo(new DeviceContents.Blank());
    }

    @Test
    void anExistingFilesystemIsNamed() throws Exception {
        assertThat(probe("ext4", image -> mkfs(image, "mkfs.ext4", "-q", image.toString())))
                .isEqualTo(new DeviceContents.Filesystem("ext4"));
    }

    @Test
    void partitionTablesLvmAndSwapAreOccupied() throws Exception {
        assertThat(probe("dos", DiskSignatures::dosPartitionTable))
                .isEqualTo(new DeviceContents.Occupied("holds a dos partition table; consume it as a Block volume"));
        assertThat(probe("lvm", DiskSignatures::lvm2Label)).isInstanceOfSatisfying(DeviceContents.Occupied.class,
                o -> assertThat(o.what()).startsWith("holds a LVM2_member signature (raid)"));
        assertThat(probe("swap", image -> mkfs(image, "mkswap", image.toString())))
                .isInstanceOfSatisfying(DeviceContents.Occupied.class,
                        o -> assertThat(o.what()).startsWith("holds a swap signature (other)"));
    }

    @Test
    void dataWithoutASignatureIsNotBlank() throws Exception {
        assertThat(probe("head", image -> ScratchDir.writeAt(image, 4096, new byte[] {1})))
                .isEqualTo(new DeviceContents.Occupied(
                        "is not blank: nonzero data in its first MiB and no known signature; refusing to format"));
        assertThat(probe("tail", image -> ScratchDir.writeAt(image, SIZE - 1, new byte[] {1})))
                .isEqualTo(new DeviceContents.Occupied(
                        "is not blank: nonzero data in its last MiB and no known signature; refusing to format"));
    }

    /** blkid answers "nothing found" (exit 2) for a device it cannot read too; that must not count as blank. */
    @Test
    void anUnreadableDeviceIsAnErrorNotBlank() {
        Path missing = dir.resolve("no-such-device");
        assertThatThrownBy(() -> DeviceContents.probe(missing))
                .hasMessageContaining("cannot read " + missing + " to check that it is blank");
    }
}
