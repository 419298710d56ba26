package io.kubenbd.node.csi;

import io.kubenbd.node.testing.PeerCommand;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.List;

/**
 * Releases what a failed test may leave on the machine under its directory: mounts (deepest
 * first, lazily) and loop devices whose file lies there. A passing test leaves none; this keeps
 * a failing one from breaking the next.
 */
final class NodeLeftovers {
    private NodeLeftovers() {}

    static void release(Path dir) throws IOException, InterruptedException {
        // Listed first: once the FUSE mount under dir is gone, losetup shows the backing file without dir's prefix.
        List<String> loops = loopDevices(dir);
        for (String mount : mounts(dir)) {
            PeerCommand.run(Duration.ofSeconds(10), "umount", "-l", mount);
        }
        for (String loop : loops) {
            PeerCommand.run(Duration.ofSeconds(10), "losetup", "-d", loop);
        }
    }

    /** Mount points under {@code dir}, deepest first. */
    static List<String> mounts(Path dir) throws IOException {
        String prefix = dir.toAbsolutePath().toString();
        return Files.readAllLines(Path.of("/proc/self/mountinfo")).stream()
                .map(line -> line.split(" ")[4]).filter(m -> m.startsWith(prefix))
                .sorted(Comparator.comparingInt(String::length).reversed()).toList();
    }

    /** Loop devices whose backing file lies under {@code dir}. */
    static List<String> loopDevices(Path dir) throws IOException, InterruptedException {
        String prefix = dir.toAbsolutePath().toString();
        return PeerCommand.run(Duration.ofSeconds(10), "losetup", "-a").stdout().lines()
                .filter(line -> line.contains(prefix)).map(line -> line.substring(0, line.indexOf(':'))).toList();
    }
}
