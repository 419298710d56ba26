package io.kubenbd.node.csi;

import java.net.ProtocolException;
import java.util.List;

/**
 * One /dev/nbdN as NBD_CMD_STATUS reports it. "Connected" is the kernel's view that the device
 * has a configuration (sockets handed over and not yet torn down), not that the server is
 * reachable right now: it stays true while the device waits out a dead-connection timeout.
 *
 * @param index     N in /dev/nbdN
 * @param connected whether the device is configured and in use
 */
record NbdDeviceStatus(int index, boolean connected) {
    /** Reads the attributes of one NBD_DEVICE_ITEM nest. */
    static NbdDeviceStatus from(List<NetlinkAttribute> item) throws ProtocolException {
        NetlinkAttribute index = NetlinkAttribute.find(item, NbdNetlinkRequest.NBD_DEVICE_INDEX)
                .orElseThrow(() -> new ProtocolException("NBD_DEVICE_ITEM without NBD_DEVICE_INDEX"));
        NetlinkAttribute connected = NetlinkAttribute.find(item, NbdNetlinkRequest.NBD_DEVICE_CONNECTED)
                .orElseThrow(() -> new ProtocolException("NBD_DEVICE_ITEM without NBD_DEVICE_CONNECTED"));
        return new NbdDeviceStatus(index.u32(), connected.u8() != 0);
    }
}
