package io.kubenbd.operator.model;

import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Pattern;
import io.fabric8.generator.annotation.Required;

/**
 * A PersistentVolume for the CSI driver {@code nbd.csi.kubenbd.io} that consumers on other nodes
 * claim to attach the export. It is cluster-scoped, so the operator deletes it itself when the
 * export goes. Its class is always the operator's ({@code --persistent-volume-class}):
 * {@code storageClassName}, when set, must name that class, so that an export cannot offer its
 * volume to claims of another class. With {@code claimRef} it is bound in advance to that one
 * claim, which must be in the export's namespace (or one the operator was told to allow), so no
 * other claim can take it (and with it the export's key).
 */
public record PersistentVolumeSpec(
        @Default("false") Boolean create,
        @Pattern("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$") String storageClassName,
        @Default("Filesystem") VolumeMode volumeMode,
        @Default("ext4") FsType fsType,
        ClaimRef claimRef) {

    public boolean createOrDefault() {
        return Boolean.TRUE.equals(create);
    }

    public VolumeMode volumeModeOrDefault() {
        return volumeMode == null ? VolumeMode.Filesystem : volumeMode;
    }

    public FsType fsTypeOrDefault() {
        return fsType == null ? FsType.ext4 : fsType;
    }

    /** How consumers see the volume. */
    public enum VolumeMode { Filesystem, Block }

    /** The one PersistentVolumeClaim (namespace and name) that may bind the PV. */
    public record ClaimRef(
            @Required @Pattern("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$") String namespace,
            @Required @Pattern("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$") String name) {
    }

    /** Filesystems the CSI node plugin creates on a blank device. */
    public enum FsType { ext4, xfs }
}
