package io.kubenbd.operator.model;

import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Pattern;

/**
 * A PersistentVolume for the CSI driver {@code nbd.csi.kubenbd.io} that consumers on other nodes
 * claim (with {@code storageClassName}) to attach the export. It is cluster-scoped, so the
 * operator deletes it itself when the export goes.
 */
public record PersistentVolumeSpec(
        @Default("false") Boolean create,
        @Default("kube-nbd") @Pattern("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$") String storageClassName,
        @Default("Filesystem") VolumeMode volumeMode,
        @Default("ext4") FsType fsType) {

    public boolean createOrDefault() {
        return Boolean.TRUE.equals(create);
    }

    public String storageClassNameOrDefault() {
        return storageClassName == null ? "kube-nbd" : storageClassName;
    }

    public VolumeMode volumeModeOrDefault() {
        return volumeMode == null ? VolumeMode.Filesystem : volumeMode;
    }

    public FsType fsTypeOrDefault() {
        return fsType == null ? FsType.ext4 : fsType;
    }

    /** How consumers see the volume. */
    public enum VolumeMode { Filesystem, Block }

    /** Filesystems the CSI node plugin creates on a blank device. */
    public enum FsType { ext4, xfs }
}
