package io.kubenbd.node.csi;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.ProtocolException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/**
 * The nbd driver's requests against include/uapi/linux/nbd-netlink.h, with every expected byte
 * written out here from the documented layout rather than from the production constants.
 */
class NbdNetlinkRequestTest {
    private static final int FAMILY = 0x1c;
    private static final int SEQUENCE = 7;
    private static final int PORT = 0x1234;
    private static final long GIB = 1L << 30;
    // NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_TRIM | NBD_FLAG_CAN_MULTI_CONN
    private static final long SERVER_FLAGS = 0x1 | 0x4 | 0x20 | 0x100;

    @Test
    void connectToAGivenDeviceCarriesEveryAttributeInTheDocumentedLayout() {
        var connect = new NbdNetlinkRequest.Connect(3, GIB, 4096, 30, 60, SERVER_FLAGS,
                NbdNetlinkRequest.CLIENT_FLAG_DESTROY_ON_DISCONNECT, List.of(5, 9), Optional.of("pvc-1"));

        ByteBuffer expected = ByteBuffer.allocate(140).order(ByteOrder.nativeOrder());
        expected.putInt(140).putShort((short) FAMILY).putShort((short) (1 | 4)).putInt(SEQUENCE).putInt(PORT);
        expected.put((byte) 1).put((byte) 1).putShort((short) 0);     // genlmsghdr: NBD_CMD_CONNECT, version 1
        expected.putShort((short) 8).putShort((short) 1).putInt(3);   // NBD_ATTR_INDEX u32
        expected.putShort((short) 12).putShort((short) 2).putLong(GIB);            // NBD_ATTR_SIZE_BYTES
        expected.putShort((short) 12).putShort((short) 3).putLong(4096);           // NBD_ATTR_BLOCK_SIZE_BYTES
        expected.putShort((short) 12).putShort((short) 4).putLong(30);             // NBD_ATTR_TIMEOUT
        expected.putShort((short) 12).putShort((short) 5).putLong(SERVER_FLAGS);   // NBD_ATTR_SERVER_FLAGS
        expected.putShort((short) 12).putShort((short) 6).putLong(1);              // NBD_ATTR_CLIENT_FLAGS
        expected.putShort((short) 28).putShort((short) (0x8000 | 7));              // NBD_ATTR_SOCKETS, nested
        expected.putShort((short) 12).putShort((short) (0x8000 | 1));              //   NBD_SOCK_ITEM, nested
        expected.putShort((short) 8).putShort((short) 1).putInt(5);                //     NBD_SOCK_FD
        expected.putShort((short) 12).putShort((short) (0x8000 | 1));              //   NBD_SOCK_ITEM, nested
        expected.putShort((short) 8).putShort((short) 1).putInt(9);                //     NBD_SOCK_FD
        expected.putShort((short) 12).putShort((short) 8).putLong(60);             // NBD_ATTR_DEAD_CONN_TIMEOUT
        // NBD_ATTR_BACKEND_IDENTIFIER: 5 characters and the NUL make nla_len 10, padded to 12
        expected.putShort((short) 10).putShort((short) 10).put("pvc-1".getBytes(StandardCharsets.US_ASCII))
                .put((byte) 0).put((byte) 0).put((byte) 0);
        assertThat(expected.hasRemaining()).isFalse();

        assertThat(connect.encode(FAMILY, SEQUENCE, PORT)).isEqualTo(expected.array());
        assertThat(connect.description()).isEqualTo("NBD_CMD_CONNECT /dev/nbd3");
    }

    @Test
    void connectToAnyDeviceLeavesTheIndexOut() {
        var connect = new NbdNetlinkRequest.Connect(NbdNetlinkRequest.ANY_INDEX, GIB, 4096, 30, 60, SERVER_FLAGS,
                NbdNetlinkRequest.CLIENT_FLAG_DESTROY_ON_DISCONNECT, List.of(5, 9), Optional.empty());

        ByteBuffer expected = ByteBuffer.allocate(120).order(ByteOrder.nativeOrder());
        expected.putInt(120).putShort((short) FAMILY).putShort((short) 5).putInt(SEQUENCE).putInt(PORT);
        expected.put((byte) 1).put((byte) 1).putShort((short) 0);
        expected.putShort((short) 12).putShort((short) 2).putLong(GIB);
        expected.putShort((short) 12).putShort((short) 3).putLong(4096);
        expected.putShort((short) 12).putShort((short) 4).putLong(30);
        expected.putShort((short) 12).putShort((short) 5).putLong(SERVER_FLAGS);
        expected.putShort((short) 12).putShort((short) 6).putLong(1);
        expected.putShort((short) 28).putShort((short) 0x8007);
        expected.putShort((short) 12).putShort((short) 0x8001).putShort((short) 8).putShort((short) 1).putInt(5);
        expected.putShort((short) 12).putShort((short) 0x8001).putShort((short) 8).putShort((short) 1).putInt(9);
        expected.putShort((short) 12).putShort((short) 8).putLong(60);
        assertThat(expected.hasRemaining()).isFalse();

        assertThat(connect.encode(FAMILY, SEQUENCE, PORT)).isEqualTo(expected.array());
        assertThat(connect.description()).isEqualTo("NBD_CMD_CONNECT to any free /dev/nbdN");
    }

    @Test
    void disconnectIsExactlyTheseLittleEndianBytes() {
        assumeTrue(ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN, "netlink is host byte order");
        byte[] expected = HexFormat.of().parseHex(
                // nlmsghdr: 28 bytes, family 0x1c, REQUEST|ACK, seq 1, pid 0
                "1c000000" + "1c00" + "0500" + "01000000" + "00000000"
                // genlmsghdr: NBD_CMD_DISCONNECT, version 1
                + "02" + "01" + "0000"
                // NBD_ATTR_INDEX = 3
                + "0800" + "0100" + "03000000");

        assertThat(new NbdNetlinkRequest.Disconnect(3).encode(FAMILY, 1, 0)).isEqualTo(expected);
    }

    @Test
    void statusOfEveryDeviceHasNoAttributesAndOfOneDeviceItsIndex() {
        ByteBuffer all = ByteBuffer.allocate(20).order(ByteOrder.nativeOrder());
        all.putInt(20).putShort((short) FAMILY).putShort((short) 5).putInt(SEQUENCE).putInt(PORT)
                .put((byte) 5).put((byte) 1).putShort((short) 0);
        ByteBuffer one = ByteBuffer.allocate(28).order(ByteOrder.nativeOrder());
        one.putInt(28).putShort((short) FAMILY).putShort((short) 5).putInt(SEQUENCE).putInt(PORT)
                .put((byte) 5).put((byte) 1).putShort((short) 0)
                .putShort((short) 8).putShort((short) 1).putInt(12);

        assertThat(new NbdNetlinkRequest.Status(NbdNetlinkRequest.ANY_INDEX).encode(FAMILY, SEQUENCE, PORT))
                .isEqualTo(all.array());
        assertThat(new NbdNetlinkRequest.Status(12).encode(FAMILY, SEQUENCE, PORT)).isEqualTo(one.array());
    }

    @Test
    void connectReplyNamesTheDeviceTheKernelPicked() throws ProtocolException {
        // What nbd_connect_reply sends, then the ACK, in one datagram.
        ByteBuffer datagram = ByteBuffer.allocate(28 + 36).order(ByteOrder.nativeOrder());
        datagram.putInt(28).putShort((short) FAMILY).putShort((short) 0).putInt(SEQUENCE).putInt(PORT)
                .put((byte) 1).put((byte) 1).putShort((short) 0)
                .putShort((short) 8).putShort((short) 1).putInt(6);
        datagram.putInt(36).putShort((short) 2).putShort((short) 0x100).putInt(SEQUENCE).putInt(PORT)
                .putInt(0)
                .putInt(140).putShort((short) FAMILY).putShort((short) 5).putInt(SEQUENCE).putInt(PORT);

        List<NetlinkMessage> messages = NetlinkMessage.parseAll(datagram.flip());
        assertThat(messages).hasSize(2);
        assertThat(messages.get(1).isError()).isTrue();
        assertThat(messages.get(1).errno()).isZero();

        var connect = new NbdNetlinkRequest.Connect(NbdNetlinkRequest.ANY_INDEX, GIB, 4096, 30, 60, 0, 0,
                List.of(5), Optional.empty());
        GenericNetlinkMessage reply = GenericNetlinkMessage.parse(messages.get(0));
        assertThat(reply.familyId()).isEqualTo(FAMILY);
        assertThat(reply.version()).isEqualTo(1);
        assertThat(connect.deviceIndexFrom(List.of(reply))).isEqualTo(6);
    }

    @Test
    void connectAcknowledgedWithoutAnIndexIsAProtocolError() {
        var connect = new NbdNetlinkRequest.Connect(2, GIB, 512, 0, 0, 0, 0, List.of(5), Optional.empty());

        assertThatThrownBy(() -> connect.deviceIndexFrom(List.of()))
                .isInstanceOf(ProtocolException.class)
                .hasMessageContaining("NBD_CMD_CONNECT /dev/nbd2")
                .hasMessageContaining("NBD_ATTR_INDEX");
    }

    @Test
    void statusReplyListsDevicesNestedWithoutTheNestedFlag() throws ProtocolException {
        // populate_nbd_status nests with nla_nest_start_noflag: types 9 and 1, not 0x8009 and 0x8001.
        ByteBuffer message = ByteBuffer.allocate(20 + 4 + 2 * 20).order(ByteOrder.nativeOrder());
        message.putInt(64).putShort((short) FAMILY).putShort((short) 0).putInt(SEQUENCE).putInt(PORT)
                .put((byte) 5).put((byte) 1).putShort((short) 0)
                .putShort((short) 44).putShort((short) 9)
                .putShort((short) 20).putShort((short) 1)
                .putShort((short) 8).putShort((short) 1).putInt(0)
                .putShort((short) 5).putShort((short) 2).put((byte) 1).put(new byte[3])
                .putShort((short) 20).putShort((short) 1)
                .putShort((short) 8).putShort((short) 1).putInt(1)
                .putShort((short) 5).putShort((short) 2).put((byte) 0).put(new byte[3]);

        GenericNetlinkMessage reply = GenericNetlinkMessage.parse(NetlinkMessage.parseAll(message.flip()).getFirst());

        assertThat(new NbdNetlinkRequest.Status(NbdNetlinkRequest.ANY_INDEX).devicesFrom(List.of(reply)))
                .containsExactly(new NbdDeviceStatus(0, true), new NbdDeviceStatus(1, false));
    }

    @Test
    void impossibleRequestsAreRefusedBeforeTheKernelSeesThem() {
        assertThatThrownBy(() -> new NbdNetlinkRequest.Connect(-1, GIB, 4096, 30, 60, 0, 0, List.of(), Optional.empty()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("socket");
        assertThatThrownBy(() -> new NbdNetlinkRequest.Connect(-1, GIB, 1000, 30, 60, 0, 0, List.of(5), Optional.empty()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("block size");
        assertThatThrownBy(() -> new NbdNetlinkRequest.Connect(-1, 0, 4096, 30, 60, 0, 0, List.of(5), Optional.empty()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("size");
        assertThatThrownBy(() -> new NbdNetlinkRequest.Connect(-1, GIB, 4096, 30, 60, 0, 0x4, List.of(5), Optional.empty()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("client flags");
        assertThatThrownBy(() -> new NbdNetlinkRequest.Connect(-2, GIB, 4096, 30, 60, 0, 0, List.of(5), Optional.empty()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("index");
        assertThatThrownBy(() -> new NbdNetlinkRequest.Disconnect(NbdNetlinkRequest.ANY_INDEX))
                .isInstanceOf(IllegalArgumentException.class);
    }
}
