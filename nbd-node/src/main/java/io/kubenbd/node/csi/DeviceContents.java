package io.kubenbd.node.csi;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.Map;

/**
 * What an attached volume holds, as far as staging it as a filesystem goes. Formatting destroys
 * whatever was there, so a device counts as {@link Blank} only when it is provably so: blkid finds
 * no signature of any kind (filesystem, partition table, RAID or LVM member, swap, crypto) and the
 * first and last MiB, where every such signature lives, read back as zeros through the attachment.
 * blkid alone cannot prove it: it prints nothing for a partition table when asked for a TYPE, and
 * its "nothing found" exit code (2) is also what an unreadable device gives.
 */
sealed interface DeviceContents {
    /** A filesystem blkid names: it is mounted as it is, never made anew. */
    record Filesystem(String type) implements DeviceContents {}

    /** No signature and zeros where signatures live: making a filesystem loses nothing. */
    record Blank() implements DeviceContents {}

    /** Something that is not a mountable filesystem; {@code what} completes "volume X ..." for the person reading it. */
    record Occupied(String what) implements DeviceContents {}

    /**
     * Asks blkid in low-level mode ({@code -p}: the device itself, not the cache) for every kind of
     * signature it knows ({@code -o export} prints TYPE and USAGE for superblocks, PTTYPE for
     * partition tables). wipefs would see the same signatures (it is the same libblkid) but says
     * less about their use; the zero check below catches what neither knows.
     */
    static DeviceContents probe(Path device) throws IOException {
        var blkid = SystemCommand.run("blkid", "-p", "-o", "export", device.toString());
        switch (blkid.exitCode()) {
            case 0 -> {
                Map<String, String> tags = tags(blkid.output());
                if (tags.containsKey("PTTYPE")) {
                    return new Occupied("holds a " + tags.get("PTTYPE") + " partition table; consume it as a Block volume");
                }
                String type = tags.get("TYPE");
                if (type != null && "filesystem".equals(tags.get("USAGE"))) {
                    return new Filesystem(type);
                }
                if (type != null) {
                    return new Occupied("holds a " + type + " signature (" + tags.getOrDefault("USAGE", "unknown use")
                            + "); refusing to format: consume it as a Block volume, or wipe it (wipefs -a) if its data is not needed");
                }
            }
            case 2 -> {
                // Nothing recognised, or nothing readable: the read below tells which.
            }
            case 8 -> {
                return new Occupied("holds several conflicting signatures (blkid: ambivalent result; wipefs lists them); refusing to format");
            }
            default -> throw new IOException("blkid -p " + device + " failed (exit " + blkid.exitCode() + "): " + blkid.output());
        }
        String nonzero = nonzeroEdge(device);
        return nonzero == null ? new Blank()
                : new Occupied("is not blank: nonzero data in its " + nonzero + " MiB and no known signature; refusing to format");
    }

    /** "first" or "last" where the device holds a nonzero byte, else null; an unreadable device throws. */
    private static String nonzeroEdge(Path device) throws IOException {
        long edge = 1 << 20;
        try (FileChannel channel = FileChannel.open(device, StandardOpenOption.READ)) {
            long size = channel.size();
            if (!zeros(channel, 0, Math.min(edge, size), device)) {
                return "first";
            }
            return zeros(channel, Math.max(0, size - edge), size, device) ? null : "last";
        } catch (IOException e) {
            throw new IOException("cannot read " + device + " to check that it is blank: " + e.getMessage(), e);
        }
    }

    private static boolean zeros(FileChannel channel, long from, long to, Path device) throws IOException {
        ByteBuffer buffer = ByteBuffer.allocate((int) (to - from));
        while (buffer.hasRemaining()) {
            if (channel.read(buffer, from + buffer.position()) < 0) {
                throw new IOException("end of " + device + " at byte " + (from + buffer.position()) + ", before its size");
            }
        }
        buffer.flip();
        while (buffer.remaining() >= Long.BYTES) {
            if (buffer.getLong() != 0) {
                return false;
            }
        }
        while (buffer.hasRemaining()) {
            if (buffer.get() != 0) {
                return false;
            }
        }
        return true;
    }

    private static Map<String, String> tags(String export) {
        Map<String, String> tags = new HashMap<>();
        for (String line : export.lines().toList()) {
            int equals = line.indexOf('=');
            if (equals > 0) {
                tags.put(line.substring(0, equals), line.substring(equals + 1));
            }
        }
        return tags;
    }
}
