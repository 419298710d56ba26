package io.kubenbd.operator.csi;

import java.util.Optional;

/**
 * A CSI volume id of this driver: {@code <namespace>/<name>} of the NbdExport that serves the
 * volume, which is what the operator writes as the PersistentVolume's {@code volumeHandle}.
 */
record VolumeHandle(String namespace, String name) {

    /** The export a volume id names, or empty when the id is not of the form {@code <namespace>/<name>}. */
    static Optional<VolumeHandle> parse(String volumeId) {
        int slash = volumeId.indexOf('/');
        if (slash <= 0 || slash == volumeId.length() - 1 || volumeId.indexOf('/', slash + 1) >= 0) {
            return Optional.empty();
        }
        return Optional.of(new VolumeHandle(volumeId.substring(0, slash), volumeId.substring(slash + 1)));
    }

    @Override
    public String toString() {
        return namespace + "/" + name;
    }
}
