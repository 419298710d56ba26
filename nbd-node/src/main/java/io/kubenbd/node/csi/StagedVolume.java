package io.kubenbd.node.csi;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * One staged volume as the state directory records it: enough to answer repeated calls the
 * same way and to attach it again after the plugin restarts. Holds no key material (the PSK has
 * its own 0600 file).
 *
 * @param block      a raw block volume (else a filesystem mounted at {@code stagingPath})
 * @param targets    where it is published, each with whether read-only
 * @param soleWriter this node holds it read-write alone: its connections take the server's
 *                   single-writer claim, so no other node can change it meanwhile
 */
record StagedVolume(String volumeId, Path stagingPath, VolumeContext context, boolean block, String fsType,
                    List<String> mountFlags, boolean readOnly, Path fuseDir, Path device, Map<String, Boolean> targets,
                    boolean soleWriter) {

    StagedVolume {
        mountFlags = List.copyOf(mountFlags);
        targets = Map.copyOf(targets);
    }

    StagedVolume withDevice(Path newDevice) {
        return new StagedVolume(volumeId, stagingPath, context, block, fsType, mountFlags, readOnly, fuseDir, newDevice, targets, soleWriter);
    }

    StagedVolume withTargets(Map<String, Boolean> newTargets) {
        return new StagedVolume(volumeId, stagingPath, context, block, fsType, mountFlags, readOnly, fuseDir, device, newTargets, soleWriter);
    }
}
