package io.kubenbd.node.csi;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import io.kubenbd.node.tls.ClientTlsCredentials;
import org.junit.jupiter.api.Test;

import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The kernel attach path's relay, with this test playing the kernel's nbd driver on its end of
 * the socketpair (this machine has no nbd driver): classic requests and simple replies, as the
 * driver sends and expects them, reach a real {@code nbd-node serve} over TLS-PSK and back.
 */
class KernelRelayIT {
    private static final int REQUEST_MAGIC = 0x25609513;
    private static final int SIMPLE_REPLY_MAGIC = 0x67446698;

    private static byte[] request(int type, long cookie, long offset, int length) {
        return ByteBuffer.allocate(28).putInt(REQUEST_MAGIC).putShort((short) 0).putShort((short) type)
                .putLong(cookie).putLong(offset).putInt(length).array();
    }

    /** Reads a simple reply and its data, as the kernel does. */
    private static ByteBuffer reply(int fd, int dataLength) throws Exception {
        ByteBuffer buffer = ByteBuffer.allocate(16 + dataLength);
        while (buffer.hasRemaining()) {
            byte[] chunk = new byte[buffer.remaining()];
            int n = UnixSocketPair.read(fd, chunk);
            assertThat(n).as("the relay ended early").isPositive();
            buffer.put(chunk, 0, n);
        }
        return buffer.flip();
    }

    @Test
    void requestsAndRepliesCrossTheRelayUnchanged() throws Exception {
        try (ScratchDir dir = ScratchDir.create("kernel-relay")) {
            Path image = dir.resolve("disk.img");
            try (RandomAccessFile file = new RandomAccessFile(image.toFile(), "rw")) {
                file.setLength(1 << 20);
            }
            PeerCommand.run(Duration.ofSeconds(10), "psktool", "-u", "kube-nbd", "-p", dir.resolve("keys.psk").toString())
                    .assertSuccess();
            try (ServerProcess server = ServerProcess.nbdNode("--export", "vol=" + image, "--tls", "require",
                    "--tls-psk", dir.resolve("keys.psk").toString())) {
                NbdClient client = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(10));
                client.startTls(ClientTlsCredentials.Psk.fromFile(dir.resolve("keys.psk"), null));
                client.go("vol"); // no structured replies: the kernel's driver reads simple ones
                UnixSocketPair sockets = UnixSocketPair.open();
                try (KernelRelay relay = KernelRelay.start("test", sockets, client)) {
                    int kernel = sockets.kernelEnd();
                    byte[] data = new byte[4096];
                    Arrays.fill(data, (byte) 0xc3);
                    UnixSocketPair.writeFully(kernel, request(1, 7, 8192, data.length), 0, 28); // WRITE
                    UnixSocketPair.writeFully(kernel, data, 0, data.length);
                    ByteBuffer written = reply(kernel, 0);
                    assertThat(written.getInt()).isEqualTo(SIMPLE_REPLY_MAGIC);
                    assertThat(written.getInt()).as("error").isZero();
                    assertThat(written.getLong()).as("cookie").isEqualTo(7);

                    UnixSocketPair.writeFully(kernel, request(3, 8, 0, 0), 0, 28); // FLUSH
                    assertThat(reply(kernel, 0).getInt(4)).isZero();

                    UnixSocketPair.writeFully(kernel, request(0, 9, 8192, data.length), 0, 28); // READ
                    ByteBuffer read = reply(kernel, data.length);
                    assertThat(read.getInt(4)).isZero();
                    assertThat(read.getLong(8)).isEqualTo(9);
                    byte[] back = new byte[data.length];
                    read.position(16).get(back);
                    assertThat(back).isEqualTo(data);

                    byte[] onServer = new byte[data.length];
                    try (RandomAccessFile file = new RandomAccessFile(image.toFile(), "r")) {
                        file.seek(8192);
                        file.readFully(onServer);
                    }
                    assertThat(onServer).isEqualTo(data);

                    // The server goes away: the kernel's end sees the connection end.
                    server.process().destroyForcibly().waitFor();
                    assertThat(UnixSocketPair.read(kernel, new byte[16])).isZero();
                }
            }
        }
    }
}
