package io.kubenbd.node.csi;

import io.kubenbd.node.client.ExportInfo;
import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.protocol.TransmissionFlags;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * The kernel attach path: /dev/nbdN configured through generic netlink (NBD_CMD_CONNECT) on
 * several sockets when the export allows multi-conn. The kernel cannot speak TLS, so each socket
 * is one end of a socketpair whose other end a {@link KernelRelay} carries over a TLS-PSK
 * connection that this process negotiated (with simple replies, which the driver expects).
 */
final class KernelAttachment implements Attachment {
    private static final Logger log = LoggerFactory.getLogger(KernelAttachment.class);
    private static final Duration NETLINK_TIMEOUT = Duration.ofSeconds(10);
    private static final long REQUEST_TIMEOUT_SECONDS = 60;
    private static final long DEAD_CONNECTION_TIMEOUT_SECONDS = 120;
    private static final long BLOCK_SIZE = 4096;

    private final String volumeId;
    private final int index;
    private final long size;
    private final List<KernelRelay> relays;

    private KernelAttachment(String volumeId, int index, long size, List<KernelRelay> relays) {
        this.volumeId = volumeId;
        this.index = index;
        this.size = size;
        this.relays = relays;
    }

    /** Whether this node's kernel has the nbd driver (its generic netlink family resolves). */
    static boolean available() {
        try (GenericNetlinkSocket netlink = GenericNetlinkSocket.open(NETLINK_TIMEOUT)) {
            netlink.resolveFamily(NbdNetlinkRequest.FAMILY_NAME);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /**
     * Disconnects a /dev/nbdN left by a crashed earlier run (its relays died with that process,
     * so it only waits out the dead-connection timeout); the volume is then attached anew. Only
     * if the device still serves this volume: by now it may have been freed and given to another.
     */
    static void releaseStale(Path device, String volumeId) {
        if (device == null || !device.getFileName().toString().startsWith("nbd")) {
            return;
        }
        if (!servesVolume(Path.of("/sys/block"), device, volumeId)) {
            log.info("volume={} leaves {} alone: it no longer serves this volume", volumeId, device);
            return;
        }
        int index = Integer.parseInt(device.getFileName().toString().substring(3));
        try (GenericNetlinkSocket netlink = GenericNetlinkSocket.open(NETLINK_TIMEOUT)) {
            int family = netlink.resolveFamily(NbdNetlinkRequest.FAMILY_NAME);
            var disconnect = new NbdNetlinkRequest.Disconnect(index);
            netlink.request(disconnect.description(), disconnect.encode(family, netlink.nextSequence(), netlink.portId()));
        } catch (IOException e) {
            log.warn("cannot disconnect stale {}: {}", device, e.getMessage());
        }
    }

    /** The backend identifier {@link #attach} gives the device, which the kernel shows in sysfs. */
    static String backendIdentifier(String volumeId) {
        return "kube-nbd:" + volumeId;
    }

    /** Whether {@code device}'s backend identifier (in {@code sysBlock/nbdN/backend}) names the volume. */
    static boolean servesVolume(Path sysBlock, Path device, String volumeId) {
        Path backend = sysBlock.resolve(device.getFileName().toString()).resolve("backend");
        try {
            return Files.readString(backend).strip().equals(backendIdentifier(volumeId));
        } catch (IOException e) {
            return false; // not connected (no backend file) or unreadable: not ours to disconnect
        }
    }

    static KernelAttachment attach(ExportDialer dialer, boolean readOnly) throws IOException {
        String volumeId = dialer.volumeId();
        VolumeContext context = dialer.context();
        List<KernelRelay> relays = new ArrayList<>();
        List<UnixSocketPair> pairs = new ArrayList<>();
        try {
            ExportInfo export = null;
            int wanted = context.connections();
            for (int i = 0; i < wanted; i++) {
                NbdClient client = dialer.dial(false);
                export = client.export();
                UnixSocketPair pair = UnixSocketPair.open();
                pairs.add(pair);
                relays.add(KernelRelay.start("nbd-" + volumeId + "-" + i, pair, client));
                if (!export.hasFlag(TransmissionFlags.CAN_MULTI_CONN)) {
                    break; // several connections to a server without multi-conn could reorder writes and flushes
                }
            }
            long serverFlags = export.flags() | (readOnly ? TransmissionFlags.READ_ONLY : 0);
            int index;
            try (GenericNetlinkSocket netlink = GenericNetlinkSocket.open(NETLINK_TIMEOUT)) {
                int family = netlink.resolveFamily(NbdNetlinkRequest.FAMILY_NAME);
                var connect = new NbdNetlinkRequest.Connect(NbdNetlinkRequest.ANY_INDEX, export.size(), BLOCK_SIZE,
                        REQUEST_TIMEOUT_SECONDS, DEAD_CONNECTION_TIMEOUT_SECONDS, serverFlags,
                        NbdNetlinkRequest.CLIENT_FLAG_DESTROY_ON_DISCONNECT,
                        pairs.stream().map(UnixSocketPair::kernelEnd).toList(), Optional.of(backendIdentifier(volumeId)));
                index = connect.deviceIndexFrom(netlink.request(connect.description(),
                        connect.encode(family, netlink.nextSequence(), netlink.portId())));
            }
            for (UnixSocketPair pair : pairs) {
                pair.closeKernelEnd(); // the kernel holds its own reference now
            }
            log.info("volume={} attached as /dev/nbd{} through the kernel on {} connection(s) to {}", volumeId, index,
                    relays.size(), context);
            return new KernelAttachment(volumeId, index, export.size(), relays);
        } catch (IOException | RuntimeException e) {
            for (KernelRelay relay : relays) {
                relay.close();
            }
            throw e;
        }
    }

    @Override
    public Path device() {
        return Path.of("/dev/nbd" + index);
    }

    @Override
    public long size() {
        return size;
    }

    /** The driver keeps the size it was connected with; a larger export needs a new attachment. */
    @Override
    public long expand() throws IOException {
        throw new IOException("the kernel path cannot grow /dev/nbd" + index + " in place; unstage and stage the volume again");
    }

    @Override
    public String failure() {
        long dead = relays.stream().filter(relay -> !relay.alive()).count();
        return dead == 0 ? null : dead + " of " + relays.size() + " connection(s) to the server ended";
    }

    @Override
    public void close() throws IOException {
        try (GenericNetlinkSocket netlink = GenericNetlinkSocket.open(NETLINK_TIMEOUT)) {
            int family = netlink.resolveFamily(NbdNetlinkRequest.FAMILY_NAME);
            var disconnect = new NbdNetlinkRequest.Disconnect(index);
            netlink.request(disconnect.description(), disconnect.encode(family, netlink.nextSequence(), netlink.portId()));
        } finally {
            for (KernelRelay relay : relays) {
                relay.close();
            }
            log.info("volume={} disconnected /dev/nbd{}", volumeId, index);
        }
    }
}
