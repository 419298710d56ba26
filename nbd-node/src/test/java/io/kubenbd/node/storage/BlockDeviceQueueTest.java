package io.kubenbd.node.storage;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Reads a sysfs-shaped tree: /sys/dev/block/M:m links to the device, a partition sits inside its disk. */
class BlockDeviceQueueTest {

    @Test
    void readsTheDiskQueue(@TempDir Path sys) throws IOException {
        Path disk = disk(sys, "1", "4096", "0");
        assertThat(BlockDeviceQueue.read(disk)).isEqualTo(new BlockDeviceQueue(true, 4096, 0));
    }

    @Test
    void partitionUsesTheQueueOfItsDisk(@TempDir Path sys) throws IOException {
        Path disk = disk(sys, "0", "0", "1048576");
        Path partition = Files.createDirectory(disk.resolve("sda1"));
        Path link = Files.createSymbolicLink(sys.resolve("8:1"), partition);
        assertThat(BlockDeviceQueue.read(link)).isEqualTo(new BlockDeviceQueue(false, 0, 1048576));
    }

    @Test
    void missingSysfsGivesCautiousAnswers(@TempDir Path sys) {
        assertThat(BlockDeviceQueue.read(sys.resolve("nowhere"))).isEqualTo(new BlockDeviceQueue(false, 0, 0));
    }

    private static Path disk(Path sys, String rotational, String discardMax, String writeZeroesMax) throws IOException {
        Path queue = Files.createDirectories(sys.resolve("sda/queue"));
        Files.writeString(queue.resolve("rotational"), rotational + "\n");
        Files.writeString(queue.resolve("discard_max_bytes"), discardMax + "\n");
        Files.writeString(queue.resolve("write_zeroes_max_bytes"), writeZeroesMax + "\n");
        return queue.getParent();
    }
}
