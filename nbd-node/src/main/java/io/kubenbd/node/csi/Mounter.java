package io.kubenbd.node.csi;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Filesystems and mounts with the node's own tools: make a filesystem (on a device
 * {@link DeviceContents} found blank), mount, bind-mount (read-only when asked), unmount, and tell from
 * /proc/self/mountinfo whether a path is a mount point.
 */
final class Mounter {
    private Mounter() {}

    /**
     * Makes a filesystem on a device {@link DeviceContents#probe} found blank. Without -F / -f, so
     * the tools' own checks stay on as a second guard (mkfs.xfs refuses an existing signature;
     * mkfs.ext4 only asks on a terminal, and stdin is closed, so it never waits for an answer).
     */
    static void format(Path device, String fsType) throws IOException {
        switch (fsType) {
            // Multi-mount protection: a second node mounting it read-write by mistake is refused by the kernel.
            case "ext4" -> SystemCommand.check("mkfs.ext4", "-q", "-O", "mmp", "-E", "nodiscard", device.toString());
            case "xfs" -> SystemCommand.check("mkfs.xfs", "-q", "-K", device.toString());
            default -> throw new IllegalArgumentException("fsType must be ext4 or xfs, got '" + fsType + "'");
        }
    }

    static void mount(Path device, Path target, String fsType, List<String> flags, boolean readOnly) throws IOException {
        Files.createDirectories(target);
        List<String> options = new ArrayList<>(flags);
        if (readOnly) {
            options.add("ro");
        }
        List<String> argv = new ArrayList<>(List.of("mount", "-t", fsType));
        if (!options.isEmpty()) {
            argv.addAll(List.of("-o", String.join(",", options)));
        }
        argv.addAll(List.of(device.toString(), target.toString()));
        SystemCommand.check(argv.toArray(String[]::new));
    }

    /** Bind-mounts {@code source} (a directory or a device node) at {@code target}. */
    static void bind(Path source, Path target, boolean readOnly) throws IOException {
        SystemCommand.check("mount", "--bind", source.toString(), target.toString());
        if (readOnly) {
            SystemCommand.check("mount", "-o", "remount,bind,ro", target.toString());
        }
    }

    static void unmount(Path target) throws IOException {
        SystemCommand.check("umount", target.toString());
    }

    static boolean isMountPoint(Path path) throws IOException {
        return sourceOf(path) != null;
    }

    /**
     * What is mounted at {@code path} (a device such as /dev/loop3, or the filesystem's own name),
     * from the last, topmost mount there; null when nothing is. mountinfo gives the mount point as
     * field 5 and the source as the second field after the " - " separator.
     */
    static String sourceOf(Path path) throws IOException {
        String wanted = path.toAbsolutePath().normalize().toString();
        String source = null;
        for (String line : Files.readAllLines(Path.of("/proc/self/mountinfo"))) {
            String[] fields = line.split(" ");
            int separator = List.of(fields).indexOf("-");
            if (fields.length > 4 && unescape(fields[4]).equals(wanted)) {
                source = separator > 0 && separator + 2 < fields.length ? unescape(fields[separator + 2]) : "";
            }
        }
        return source;
    }

    /** mountinfo writes space, tab, newline and backslash as octal escapes. */
    private static String unescape(String field) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < field.length(); i++) {
            char c = field.charAt(i);
            if (c == '\\' && i + 3 < field.length()) {
                out.append((char) Integer.parseInt(field.substring(i + 1, i + 4), 8));
                i += 3;
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    /** Grows the filesystem on a device to the device's size. */
    static void growFilesystem(Path device, Path mountPoint, String fsType) throws IOException {
        switch (fsType) {
            case "xfs" -> SystemCommand.check("xfs_growfs", mountPoint.toString());
            default -> SystemCommand.check("resize2fs", device.toString());
        }
    }
}
