package io.kubenbd.node.csi;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.kubenbd.node.storage.Errno;
import io.kubenbd.node.storage.ErrnoException;
import java.io.IOException;
import java.net.SocketTimeoutException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/** Against the running kernel: every Linux has the generic netlink controller, not every one the nbd driver. */
class GenericNetlinkSocketTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(5);

    @Test
    void theControllerResolvesToItsFixedId() throws IOException {
        try (GenericNetlinkSocket socket = GenericNetlinkSocket.open(TIMEOUT)) {
            assertThat(socket.portId()).isNotZero();
            assertThat(socket.resolveFamily("nlctrl")).isEqualTo(16);
            assertThat(socket.resolveFamily("nlctrl")).as("the socket stays usable").isEqualTo(16);
        }
    }

    /**
     * Looking the family up makes the kernel try to load the module by its alias, so
     * /sys/module/nbd is read afterwards: it exists exactly when the driver is there now.
     */
    @Test
    void theNbdFamilyResolvesExactlyWhenTheDriverIsPresent() throws IOException {
        try (GenericNetlinkSocket socket = GenericNetlinkSocket.open(TIMEOUT)) {
            int familyId = -1;
            IOException failure = null;
            try {
                familyId = socket.resolveFamily(NbdNetlinkRequest.FAMILY_NAME);
            } catch (IOException e) {
                failure = e;
            }

            if (Files.exists(Path.of("/sys/module/nbd"))) {
                assertThat(failure).as("the nbd module is loaded").isNull();
                assertThat(familyId).isGreaterThanOrEqualTo(16);
            } else {
                assertThat(failure)
                        .isInstanceOfSatisfying(NetlinkFamilyNotFoundException.class,
                                e -> assertThat(e.familyName()).isEqualTo("nbd"))
                        .hasMessage("generic netlink family 'nbd' not found (is the nbd kernel module loaded?)")
                        .cause()
                        .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.ENOENT));
            }
        }
    }

    @Test
    void theKernelsRefusalComesBackAsItsErrno() throws IOException {
        try (GenericNetlinkSocket socket = GenericNetlinkSocket.open(TIMEOUT)) {
            // CTRL_CMD_GETFAMILY naming no family at all.
            byte[] nameless = new GenericNetlinkMessageBuilder(16, 1 | 4, socket.nextSequence(), socket.portId(), 3, 1).build();

            assertThatThrownBy(() -> socket.request("CTRL_CMD_GETFAMILY without a name", nameless))
                    .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EINVAL))
                    .hasMessage("netlink CTRL_CMD_GETFAMILY without a name: EINVAL (Invalid argument)");
        }
    }

    @Test
    void anUnansweredRequestTimesOutAndTheSocketRecovers() throws IOException {
        try (GenericNetlinkSocket socket = GenericNetlinkSocket.open(Duration.ofMillis(300))) {
            // Neither NLM_F_REQUEST nor NLM_F_ACK: the kernel drops it without a word.
            byte[] unanswered = new GenericNetlinkMessageBuilder(16, 0, socket.nextSequence(), socket.portId(), 3, 1)
                    .putString(2, "nlctrl").build();

            long start = System.nanoTime();
            assertThatThrownBy(() -> socket.request("a silent message", unanswered))
                    .isInstanceOf(SocketTimeoutException.class)
                    .hasMessage("no complete reply from the kernel to a silent message within 300 ms");
            assertThat(Duration.ofNanos(System.nanoTime() - start)).isBetween(Duration.ofMillis(250), Duration.ofSeconds(3));

            assertThat(socket.resolveFamily("nlctrl")).isEqualTo(16);
        }
    }

    @Test
    void aClosedSocketRefusesRequests() throws IOException {
        GenericNetlinkSocket socket = GenericNetlinkSocket.open(TIMEOUT);
        socket.close();
        socket.close();

        assertThatThrownBy(() -> socket.resolveFamily("nlctrl")).isInstanceOf(IOException.class).hasMessageContaining("closed");
    }
}
