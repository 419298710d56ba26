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
        String prefix = dir.toAbsolutePath().toString();
        List<String> mounts = Files.readAllLines(Path.of("/proc/self/mountinfo")).stream()
                .map(line -> line.split(" ")[4]).filter(m -> m.startsWith(prefix))
                .sorted(Comparator.comparingInt(String::length).reversed()).toList();
        for (String mount : mounts) {
            PeerCommand.run(Duration.ofSeconds(10), "umount", "-l", mount);
        }
        for (String line : PeerCommand.run(Duration.ofSeconds(10), "losetup", "-a").stdout().lines().toList()) {
            if (line.contains(prefix)) {
                PeerCommand.run(Duration.ofSeconds(10), "losetup", "-d", line.substring(0, line.indexOf(':')));
            }
        }
    }
}
