package io.kubenbd.node.storage;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What the kernel's request queue says about a block device, from
 * {@code /sys/dev/block/MAJOR:MINOR/queue}. Where sysfs is missing (some containers) the
 * answers are the cautious ones: not rotational, no discard, no write-zeroes offload.
 *
 * @param rotational          queue/rotational is 1
 * @param discardMaxBytes     queue/discard_max_bytes; 0 when the device cannot discard
 * @param writeZeroesMaxBytes queue/write_zeroes_max_bytes; 0 when zeroing means writing zero pages
 */
record BlockDeviceQueue(boolean rotational, long discardMaxBytes, long writeZeroesMaxBytes) {

    static BlockDeviceQueue of(int major, int minor) {
        return read(Path.of("/sys/dev/block", major + ":" + minor));
    }

    static BlockDeviceQueue read(Path sysfsDevice) {
        Path queue = queueDirectory(sysfsDevice);
        return new BlockDeviceQueue(
                readNumber(queue.resolve("rotational")) == 1,
                readNumber(queue.resolve("discard_max_bytes")),
                readNumber(queue.resolve("write_zeroes_max_bytes")));
    }

    /** A partition has no queue of its own; it shares the one of the disk it lies on. */
    private static Path queueDirectory(Path sysfsDevice) {
        Path own = sysfsDevice.resolve("queue");
        if (Files.isDirectory(own)) {
            return own;
        }
        try {
            Path parent = sysfsDevice.toRealPath().getParent();
            return parent == null ? own : parent.resolve("queue");
        } catch (IOException e) {
            return own;
        }
    }

    private static long readNumber(Path attribute) {
        try {
            return Long.parseLong(Files.readString(attribute).strip());
        } catch (IOException | NumberFormatException e) {
            return 0;
        }
    }
}
