package io.kubenbd.node.csi;

import java.net.ProtocolException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * A request to the Linux nbd driver over its generic netlink family ({@code
 * include/uapi/linux/nbd-netlink.h}). Unlike the older ioctl interface, which needs a process
 * blocked in {@code NBD_DO_IT} for as long as the device lives, netlink hands the connected
 * sockets to the kernel and returns, so the CSI plugin can restart without tearing down
 * attached volumes. Each request encodes to the exact bytes of one message for the family id
 * that {@link GenericNetlinkFamilyRequest} resolved, and knows how to read its own reply.
 */
sealed interface NbdNetlinkRequest {
    String FAMILY_NAME = "nbd";
    /** {@code NBD_GENL_VERSION}. */
    int VERSION = 1;
    /** Device index meaning "the kernel picks" (CONNECT) or "every device" (STATUS); sent by leaving out NBD_ATTR_INDEX. */
    int ANY_INDEX = -1;

    /** Free the device when it disconnects instead of keeping an unconfigured /dev/nbdN around. */
    long CLIENT_FLAG_DESTROY_ON_DISCONNECT = 1L << 0;
    /** Disconnect when the last opener closes the device. */
    long CLIENT_FLAG_DISCONNECT_ON_CLOSE = 1L << 1;

    int NBD_CMD_CONNECT = 1;
    int NBD_CMD_DISCONNECT = 2;
    int NBD_CMD_STATUS = 5;

    int NBD_ATTR_INDEX = 1;
    int NBD_ATTR_SIZE_BYTES = 2;
    int NBD_ATTR_BLOCK_SIZE_BYTES = 3;
    int NBD_ATTR_TIMEOUT = 4;
    int NBD_ATTR_SERVER_FLAGS = 5;
    int NBD_ATTR_CLIENT_FLAGS = 6;
    int NBD_ATTR_SOCKETS = 7;
    int NBD_ATTR_DEAD_CONN_TIMEOUT = 8;
    int NBD_ATTR_DEVICE_LIST = 9;
    int NBD_ATTR_BACKEND_IDENTIFIER = 10;

    /** Inside NBD_ATTR_SOCKETS, one nest per socket. */
    int NBD_SOCK_ITEM = 1;
    /** Inside NBD_SOCK_ITEM. */
    int NBD_SOCK_FD = 1;

    /** Inside NBD_ATTR_DEVICE_LIST, one nest per device. */
    int NBD_DEVICE_ITEM = 1;
    /** Inside NBD_DEVICE_ITEM. */
    int NBD_DEVICE_INDEX = 1;
    int NBD_DEVICE_CONNECTED = 2;

    /** The whole netlink message, {@code NLM_F_REQUEST | NLM_F_ACK} so that success is confirmed too. */
    byte[] encode(int familyId, int sequence, int portId);

    /** What the request does, for error messages: e.g. "NBD_CMD_DISCONNECT /dev/nbd3". */
    String description();

    /**
     * Configures a device and starts it on already negotiated connections (the NBD handshake is
     * done in user space; the kernel only speaks the transmission phase).
     *
     * @param index                  the /dev/nbdN to use, or {@link #ANY_INDEX} for a free (or new) one
     * @param sizeBytes              the export size
     * @param blockSizeBytes         the logical block size, a power of two from 512 to the page size
     * @param timeoutSeconds         how long a request may take before the kernel fails it; 0 keeps the kernel's default
     * @param deadConnTimeoutSeconds how long I/O waits for a dead connection to be replaced (NBD_CMD_RECONFIGURE)
     *                               before failing; 0 fails at once
     * @param serverFlags            the transmission flags from the handshake (read-only, flush, trim, ...)
     * @param clientFlags            {@link #CLIENT_FLAG_DESTROY_ON_DISCONNECT}, {@link #CLIENT_FLAG_DISCONNECT_ON_CLOSE}
     * @param socketFds              descriptors of the connected sockets, one per connection; the kernel takes its
     *                               own reference, so the caller closes them afterwards
     * @param backendIdentifier      shown in /sys/block/nbdN/backend, and the kernel refuses a RECONFIGURE that
     *                               names a different one: lets a restarted plugin recognise its devices
     */
    record Connect(int index, long sizeBytes, long blockSizeBytes, long timeoutSeconds, long deadConnTimeoutSeconds,
            long serverFlags, long clientFlags, List<Integer> socketFds, Optional<String> backendIdentifier)
            implements NbdNetlinkRequest {
        public Connect {
            requireIndexOrAny(index);
            if (sizeBytes <= 0) {
                throw new IllegalArgumentException("size must be positive: " + sizeBytes);
            }
            if (blockSizeBytes < 512 || Long.bitCount(blockSizeBytes) != 1) {
                throw new IllegalArgumentException("block size must be a power of two of at least 512: " + blockSizeBytes);
            }
            if (timeoutSeconds < 0 || deadConnTimeoutSeconds < 0) {
                throw new IllegalArgumentException("timeouts must not be negative: " + timeoutSeconds + ", "
                        + deadConnTimeoutSeconds);
            }
            if ((clientFlags & ~(CLIENT_FLAG_DESTROY_ON_DISCONNECT | CLIENT_FLAG_DISCONNECT_ON_CLOSE)) != 0) {
                throw new IllegalArgumentException("unknown nbd client flags: 0x" + Long.toHexString(clientFlags));
            }
            socketFds = List.copyOf(socketFds);
            if (socketFds.isEmpty() || socketFds.stream().anyMatch(fd -> fd < 0)) {
                throw new IllegalArgumentException("need at least one socket, all valid descriptors: " + socketFds);
            }
            if (backendIdentifier.filter(String::isEmpty).isPresent()) {
                throw new IllegalArgumentException("an empty backend identifier identifies nothing; leave it out instead");
            }
        }

        @Override
        public byte[] encode(int familyId, int sequence, int portId) {
            GenericNetlinkMessageBuilder message = request(familyId, sequence, portId, NBD_CMD_CONNECT);
            if (index != ANY_INDEX) {
                message.putU32(NBD_ATTR_INDEX, index);
            }
            message.putU64(NBD_ATTR_SIZE_BYTES, sizeBytes)
                    .putU64(NBD_ATTR_BLOCK_SIZE_BYTES, blockSizeBytes)
                    .putU64(NBD_ATTR_TIMEOUT, timeoutSeconds)
                    .putU64(NBD_ATTR_SERVER_FLAGS, serverFlags)
                    .putU64(NBD_ATTR_CLIENT_FLAGS, clientFlags);
            int sockets = message.startNested(NBD_ATTR_SOCKETS);
            for (int fd : socketFds) {
                int item = message.startNested(NBD_SOCK_ITEM);
                message.putU32(NBD_SOCK_FD, fd).endNested(item);
            }
            message.endNested(sockets).putU64(NBD_ATTR_DEAD_CONN_TIMEOUT, deadConnTimeoutSeconds);
            backendIdentifier.ifPresent(identifier -> message.putString(NBD_ATTR_BACKEND_IDENTIFIER, identifier));
            return message.build();
        }

        @Override
        public String description() {
            return "NBD_CMD_CONNECT " + (index == ANY_INDEX ? "to any free /dev/nbdN" : "/dev/nbd" + index);
        }

        /**
         * The device the kernel configured: it answers a successful CONNECT with an NBD_CMD_CONNECT
         * message carrying NBD_ATTR_INDEX ahead of the ACK, which is the only way to learn which
         * device {@link #ANY_INDEX} picked.
         */
        public int deviceIndexFrom(List<GenericNetlinkMessage> replies) throws ProtocolException {
            for (GenericNetlinkMessage reply : replies) {
                if (reply.command() == NBD_CMD_CONNECT) {
                    Optional<NetlinkAttribute> deviceIndex = reply.attribute(NBD_ATTR_INDEX);
                    if (deviceIndex.isPresent()) {
                        return deviceIndex.get().u32();
                    }
                }
            }
            throw new ProtocolException("the kernel acknowledged " + description()
                    + " without saying which device (NBD_ATTR_INDEX)");
        }
    }

    /** Shuts a device's connections down; with {@link #CLIENT_FLAG_DESTROY_ON_DISCONNECT} the device then goes away. */
    record Disconnect(int index) implements NbdNetlinkRequest {
        public Disconnect {
            if (index < 0) {
                throw new IllegalArgumentException("disconnect needs a device index: " + index);
            }
        }

        @Override
        public byte[] encode(int familyId, int sequence, int portId) {
            return request(familyId, sequence, portId, NBD_CMD_DISCONNECT).putU32(NBD_ATTR_INDEX, index).build();
        }

        @Override
        public String description() {
            return "NBD_CMD_DISCONNECT /dev/nbd" + index;
        }
    }

    /** Asks which devices exist and whether each is connected, e.g. to re-adopt devices after a restart. */
    record Status(int index) implements NbdNetlinkRequest {
        public Status {
            requireIndexOrAny(index);
        }

        @Override
        public byte[] encode(int familyId, int sequence, int portId) {
            GenericNetlinkMessageBuilder message = request(familyId, sequence, portId, NBD_CMD_STATUS);
            if (index != ANY_INDEX) {
                message.putU32(NBD_ATTR_INDEX, index);
            }
            return message.build();
        }

        @Override
        public String description() {
            return "NBD_CMD_STATUS " + (index == ANY_INDEX ? "of every /dev/nbdN" : "/dev/nbd" + index);
        }

        /**
         * The devices in the reply's NBD_ATTR_DEVICE_LIST; empty when {@link #index} does not exist.
         * The kernel nests these without NLA_F_NESTED, which {@link NetlinkAttribute} ignores anyway.
         */
        public List<NbdDeviceStatus> devicesFrom(List<GenericNetlinkMessage> replies) throws ProtocolException {
            for (GenericNetlinkMessage reply : replies) {
                Optional<NetlinkAttribute> deviceList = reply.attribute(NBD_ATTR_DEVICE_LIST);
                if (reply.command() == NBD_CMD_STATUS && deviceList.isPresent()) {
                    List<NbdDeviceStatus> devices = new ArrayList<>();
                    for (NetlinkAttribute item : deviceList.get().nested()) {
                        if (item.type() == NBD_DEVICE_ITEM) {
                            devices.add(NbdDeviceStatus.from(item.nested()));
                        }
                    }
                    return List.copyOf(devices);
                }
            }
            throw new ProtocolException("the kernel answered " + description() + " without NBD_ATTR_DEVICE_LIST");
        }
    }

    private static GenericNetlinkMessageBuilder request(int familyId, int sequence, int portId, int command) {
        return new GenericNetlinkMessageBuilder(familyId, NetlinkMessage.NLM_F_REQUEST | NetlinkMessage.NLM_F_ACK,
                sequence, portId, command, VERSION);
    }

    private static void requireIndexOrAny(int index) {
        if (index < ANY_INDEX) {
            throw new IllegalArgumentException("device index must be " + ANY_INDEX + " (any) or a /dev/nbdN number: " + index);
        }
    }
}
