package io.kubenbd.node.csi;

import io.kubenbd.node.client.NbdClient;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * Carries one NBD connection between the kernel's end of a socketpair and a negotiated
 * connection to the server (TLS-PSK, simple replies, as the kernel's driver expects): requests
 * go one way, replies the other, each on its own thread, byte for byte. When either side ends,
 * both directions are shut down, which the kernel sees as a dead connection.
 */
final class KernelRelay implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(KernelRelay.class);
    private static final int BUFFER = 256 << 10;

    private final String name;
    private final UnixSocketPair sockets;
    private final NbdClient client;
    private final Thread toServer;
    private final Thread toKernel;

    private KernelRelay(String name, UnixSocketPair sockets, NbdClient client) {
        this.name = name;
        this.sockets = sockets;
        this.client = client;
        this.toServer = Thread.ofPlatform().daemon().name(name + "-to-server").unstarted(this::requestsToServer);
        this.toKernel = Thread.ofPlatform().daemon().name(name + "-to-kernel").unstarted(this::repliesToKernel);
    }

    /** Starts relaying; takes ownership of both the sockets and the client. */
    static KernelRelay start(String name, UnixSocketPair sockets, NbdClient client) {
        KernelRelay relay = new KernelRelay(name, sockets, client);
        relay.toServer.start();
        relay.toKernel.start();
        return relay;
    }

    private void requestsToServer() {
        byte[] buffer = new byte[BUFFER];
        OutputStream out = client.transmissionOutput();
        try {
            int n;
            while ((n = UnixSocketPair.read(sockets.relayEnd(), buffer)) > 0) {
                out.write(buffer, 0, n);
                out.flush();
            }
        } catch (IOException e) {
            log.debug("{}: kernel side ended: {}", name, e.getMessage());
        } finally {
            end();
        }
    }

    private void repliesToKernel() {
        byte[] buffer = new byte[BUFFER];
        InputStream in = client.transmissionInput();
        try {
            int n;
            while ((n = in.read(buffer)) > 0) {
                UnixSocketPair.writeFully(sockets.relayEnd(), buffer, 0, n);
            }
        } catch (IOException e) {
            log.debug("{}: server side ended: {}", name, e.getMessage());
        } finally {
            end();
        }
    }

    private void end() {
        sockets.shutdown();
        try {
            client.close();
        } catch (IOException ignored) {
            // The connection is going away in any case.
        }
    }

    boolean alive() {
        return toServer.isAlive() && toKernel.isAlive();
    }

    @Override
    public void close() throws IOException {
        end();
        try {
            toServer.join(5000);
            toKernel.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        sockets.close();
    }
}
