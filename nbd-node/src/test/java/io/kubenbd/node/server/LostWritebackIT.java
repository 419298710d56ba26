package io.kubenbd.node.server;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.client.NbdCommandException;
import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * A disk that loses written data in writeback: a loop device over a file on a 1 MiB tmpfs,
 * so the kernel accepts writes into the device's page cache and fails them when it writes
 * them back. Linux reports such an error to one fdatasync of the open file and then forgets
 * it (the pages are clean again, their data gone); the server must remember it, so that no
 * later FLUSH or FUA write on any connection reports success for data that is not there.
 */
class LostWritebackIT {
    private static final long SIZE = 16L << 20;
    private static final Duration TIMEOUT = Duration.ofSeconds(20);

    private ScratchDir scratch;
    private Path mountPoint;
    private String device;

    @BeforeEach
    void smallTmpfsBehindLoopDevice() throws Exception {
        PeerCommand.requireInstalled("losetup", "mount", "umount");
        scratch = ScratchDir.create("lost-writeback");
        mountPoint = scratch.resolve("tmpfs");
        java.nio.file.Files.createDirectories(mountPoint);
        PeerCommand.run(TIMEOUT, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint.toString()).assertSuccess();
        Path backing = mountPoint.resolve("disk.img");
        PeerCommand.run(TIMEOUT, "truncate", "-s", Long.toString(SIZE), backing.toString()).assertSuccess();
        device = PeerCommand.run(TIMEOUT, "losetup", "--find", "--show", backing.toString()).assertSuccess().stdout().strip();
    }

    @AfterEach
    void detach() throws Exception {
        try {
            if (device != null) {
                PeerCommand.run(TIMEOUT, "losetup", "-d", device);
            }
            PeerCommand.run(TIMEOUT, "umount", mountPoint.toString());
        } finally {
            scratch.close();
        }
    }

    @Test
    void flushErrorIsReportedToEveryLaterFlushAndFuaWriteOnEveryConnection() throws Exception {
        byte[] data = new byte[2 << 20];
        new Random(7).nextBytes(data);
        ServerSettings settings = new ServerSettings(Duration.ofSeconds(5), 2, 16, 64L << 20, Duration.ofSeconds(5));
        try (NbdServer server = NbdServer.start(new InetSocketAddress("127.0.0.1", 0),
                ExportRegistry.open(List.of(new ExportConfig("disk", Path.of(device), false, "", 2))), settings);
                NbdClient first = connect(server);
                NbdClient second = connect(server)) {
            // Both acknowledged: in the device's page cache, more than the 1 MiB the file system behind it can hold.
            first.write(0, data, 0);
            second.write(4L << 20, data, 0);

            assertThatThrownBy(first::flush).isInstanceOfSatisfying(NbdCommandException.class,
                    e -> assertThat(e.error()).isIn(NbdError.EIO, NbdError.ENOSPC));
            // The kernel has reported the error once; the data the second connection wrote are lost as well.
            assertThatThrownBy(second::flush).as("a later FLUSH on another connection")
                    .isInstanceOfSatisfying(NbdCommandException.class, e -> assertThat(e.error()).isEqualTo(NbdError.EIO));
            assertThatThrownBy(first::flush).as("a later FLUSH on the same connection")
                    .isInstanceOfSatisfying(NbdCommandException.class, e -> assertThat(e.error()).isEqualTo(NbdError.EIO));
            assertThatThrownBy(() -> second.write(8L << 20, new byte[4096], CommandFlags.FUA)).as("a FUA write")
                    .isInstanceOfSatisfying(NbdCommandException.class, e -> assertThat(e.error()).isEqualTo(NbdError.EIO));
            // Reads go on: the client can still see what is there.
            assertThat(first.read(12L << 20, 4096)).containsOnly(0);
        }
    }

    private static NbdClient connect(NbdServer server) throws Exception {
        NbdClient client = NbdClient.connect("127.0.0.1", server.port(), TIMEOUT);
        client.negotiateBestReplies();
        client.go("disk");
        return client;
    }
}
