package io.kubenbd.node.csi;

import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

/**
 * The plugin's state directory: per staged volume a JSON record and, for TLS-PSK, the key file
 * the NBD client reads, both owner-only (0600) and written atomically (temporary file, then
 * rename), so a crash leaves the old or the new version, never half of one. File names are the
 * volume id in URL-safe base64, since ids may contain any character.
 */
final class NodeState {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path volumes;

    NodeState(Path stateDir) throws IOException {
        this.volumes = stateDir.resolve("volumes");
        Files.createDirectories(volumes);
        Files.setPosixFilePermissions(volumes, PosixFilePermissions.fromString("rwx------"));
    }

    Path fuseDir(String volumeId) {
        return volumes.resolve(fileName(volumeId) + ".fuse");
    }

    Path pskFile(String volumeId) {
        return volumes.resolve(fileName(volumeId) + ".psk");
    }

    void writePsk(String volumeId, String keys) throws IOException {
        writePrivate(pskFile(volumeId), keys.getBytes(StandardCharsets.US_ASCII));
    }

    void save(StagedVolume volume) throws IOException {
        writePrivate(volumes.resolve(fileName(volume.volumeId()) + ".json"), JSON.writeValueAsBytes(volume));
    }

    void remove(String volumeId) throws IOException {
        Files.deleteIfExists(volumes.resolve(fileName(volumeId) + ".json"));
        Files.deleteIfExists(pskFile(volumeId));
        if (!Mounter.isMountPoint(fuseDir(volumeId))) {
            Files.deleteIfExists(fuseDir(volumeId));
        }
    }

    List<StagedVolume> load() throws IOException {
        List<StagedVolume> all = new ArrayList<>();
        try (var files = Files.list(volumes)) {
            for (Path file : files.filter(f -> f.toString().endsWith(".json")).toList()) {
                all.add(JSON.readValue(file.toFile(), StagedVolume.class));
            }
        }
        return all;
    }

    private static String fileName(String volumeId) {
        return Base64.getUrlEncoder().withoutPadding().encodeToString(volumeId.getBytes(StandardCharsets.UTF_8));
    }

    private static void writePrivate(Path file, byte[] content) throws IOException {
        Path temporary = Files.createTempFile(file.getParent(), ".tmp", null,
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
        try {
            Files.write(temporary, content);
            Files.move(temporary, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(temporary);
        }
    }
}
