package io.kubenbd.node.csi;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.client.NbdCommandException;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.tls.ClientTlsCredentials;

import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Path;
import java.time.Duration;

/**
 * Opens one connection to a volume's export, ready for transmission: from this node's
 * source address, through TLS-PSK when the volume asks for it, and, for a volume this node
 * mounts read-write alone, with the server's single-writer claim taken (a zero-length WRITE,
 * see the server's WriterClaim), so that while this node holds the volume no other node can
 * change it. Every connection claims, the first and every reconnection alike.
 *
 * @param sourceAddress the address to connect from (the plugin's {@code --source-address}), or
 *                      null for the system's choice
 * @param claimWriter   whether to take the single-writer claim
 */
record ExportDialer(String volumeId, VolumeContext context, Path pskFile, InetAddress sourceAddress, boolean claimWriter) {
    static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(10);

    /** The server refused the claim: another node holds the volume for writing. Not worth retrying. */
    static final class ClaimRefusedException extends IOException {
        private static final long serialVersionUID = 1L;

        ClaimRefusedException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /**
     * @param structuredReplies negotiate the best reply style (the FUSE path's client reads
     *                          structured replies); the kernel's driver takes simple replies only
     */
    NbdClient dial(boolean structuredReplies) throws IOException {
        NbdClient client = NbdClient.connect(context.host(), context.port(), sourceAddress, CONNECT_TIMEOUT);
        try {
            if (context.tlsMode() == VolumeContext.TlsMode.PSK) {
                client.startTls(ClientTlsCredentials.Psk.fromFile(pskFile, null));
            }
            if (structuredReplies) {
                client.negotiateBestReplies();
            }
            client.go(context.exportName());
            if (claimWriter) {
                claim(client);
            }
            return client;
        } catch (IOException | RuntimeException e) {
            client.close();
            throw e;
        }
    }

    private void claim(NbdClient client) throws IOException {
        try {
            client.write(0, new byte[0], 0);
        } catch (NbdCommandException e) {
            if (e.error() == NbdError.EPERM) {
                throw new ClaimRefusedException("volume " + volumeId + " is in use read-write on another node: "
                        + e.getMessage(), e);
            }
            throw e;
        }
    }
}
