package io.kubenbd.node.csi;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.net.ProtocolException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Netlink framing (linux/netlink.h, linux/genetlink.h): padding, nesting, errors, the controller. */
class GenericNetlinkMessageTest {

    @Test
    void oddLengthStringsArePaddedWithZeroesThatNlaLenDoesNotCount() {
        byte[] message = new GenericNetlinkMessageBuilder(0x20, 1, 1, 0, 9, 2)
                .putString(4, "abcd")    // 4 + 5 = 9 bytes, 3 of padding
                .putU32(5, 0xdeadbeef)   // starts on the next 4-byte boundary
                .putString(6, "abc")     // 4 + 4 = 8 bytes, no padding
                .build();

        ByteBuffer expected = ByteBuffer.allocate(20 + 12 + 8 + 8).order(ByteOrder.nativeOrder());
        expected.putInt(48).putShort((short) 0x20).putShort((short) 1).putInt(1).putInt(0)
                .put((byte) 9).put((byte) 2).putShort((short) 0)
                .putShort((short) 9).putShort((short) 4).put("abcd".getBytes(StandardCharsets.US_ASCII))
                .put((byte) 0).put(new byte[3])
                .putShort((short) 8).putShort((short) 5).putInt(0xdeadbeef)
                .putShort((short) 8).putShort((short) 6).put("abc".getBytes(StandardCharsets.US_ASCII)).put((byte) 0);
        assertThat(expected.hasRemaining()).isFalse();
        assertThat(message).isEqualTo(expected.array());
    }

    @Test
    void nestsCarryTheNestedFlagAndCountTheirContentsPaddingIncluded() {
        var builder = new GenericNetlinkMessageBuilder(0x20, 1, 1, 0, 1, 1);
        int outer = builder.startNested(3);
        int inner = builder.startNested(1);
        builder.putString(2, "x").endNested(inner).endNested(outer);
        byte[] message = builder.build();

        ByteBuffer expected = ByteBuffer.allocate(20 + 16).order(ByteOrder.nativeOrder());
        expected.putInt(36).putShort((short) 0x20).putShort((short) 1).putInt(1).putInt(0)
                .put((byte) 1).put((byte) 1).putShort((short) 0)
                .putShort((short) 16).putShort((short) (0x8000 | 3))
                .putShort((short) 12).putShort((short) (0x8000 | 1))
                .putShort((short) 6).putShort((short) 2).put((byte) 'x').put((byte) 0).put(new byte[2]);
        assertThat(expected.hasRemaining()).isFalse();
        assertThat(message).isEqualTo(expected.array());
    }

    @Test
    void getFamilyAsksTheControllerByNulTerminatedName() {
        ByteBuffer expected = ByteBuffer.allocate(28).order(ByteOrder.nativeOrder());
        expected.putInt(28).putShort((short) 16).putShort((short) 5).putInt(42).putInt(77)
                .put((byte) 3).put((byte) 1).putShort((short) 0)            // CTRL_CMD_GETFAMILY
                .putShort((short) 8).putShort((short) 2)                   // CTRL_ATTR_FAMILY_NAME
                .put("nbd".getBytes(StandardCharsets.US_ASCII)).put((byte) 0);

        assertThat(new GenericNetlinkFamilyRequest("nbd").encode(42, 77)).isEqualTo(expected.array());
    }

    @Test
    void getFamilyReplyGivesTheFamilyId() throws ProtocolException {
        // CTRL_CMD_NEWFAMILY: CTRL_ATTR_FAMILY_NAME "nbd", CTRL_ATTR_FAMILY_ID u16 (len 6, padded), CTRL_ATTR_VERSION u32.
        ByteBuffer datagram = ByteBuffer.allocate(44).order(ByteOrder.nativeOrder());
        datagram.putInt(44).putShort((short) 16).putShort((short) 0).putInt(42).putInt(77)
                .put((byte) 1).put((byte) 2).putShort((short) 0)
                .putShort((short) 8).putShort((short) 2).put("nbd".getBytes(StandardCharsets.US_ASCII)).put((byte) 0)
                .putShort((short) 6).putShort((short) 1).putShort((short) 0x1c).putShort((short) 0)
                .putShort((short) 8).putShort((short) 3).putInt(1);

        List<GenericNetlinkMessage> replies = List.of(
                GenericNetlinkMessage.parse(NetlinkMessage.parseAll(datagram.flip()).getFirst()));

        assertThat(replies.getFirst().attribute(2).orElseThrow().string()).isEqualTo("nbd");
        assertThat(new GenericNetlinkFamilyRequest("nbd").familyIdFrom(replies)).isEqualTo(0x1c);
    }

    @Test
    void errorMessagesCarryTheNegatedErrnoAndZeroIsAnAck() throws ProtocolException {
        ByteBuffer datagram = ByteBuffer.allocate(2 * 36).order(ByteOrder.nativeOrder());
        for (int error : new int[] {0, -16}) {
            datagram.putInt(36).putShort((short) 2).putShort((short) 0).putInt(9).putInt(77)
                    .putInt(error)
                    .putInt(28).putShort((short) 0x1c).putShort((short) 5).putInt(9).putInt(77);
        }

        List<NetlinkMessage> messages = NetlinkMessage.parseAll(datagram.flip());

        assertThat(messages).extracting(NetlinkMessage::type).containsExactly(2, 2);
        assertThat(messages).extracting(NetlinkMessage::sequence).containsExactly(9, 9);
        assertThat(messages.get(0).errno()).isZero();
        assertThat(messages.get(1).errno()).isEqualTo(16);
    }

    @Test
    void lengthsThatOverrunTheDatagramAreProtocolErrors() {
        ByteBuffer shortMessage = ByteBuffer.allocate(16).order(ByteOrder.nativeOrder());
        shortMessage.putInt(40).putShort((short) 0x1c).putShort((short) 0).putInt(1).putInt(0);
        assertThatThrownBy(() -> NetlinkMessage.parseAll(shortMessage.flip()))
                .isInstanceOf(ProtocolException.class).hasMessageContaining("claims 40 bytes");

        ByteBuffer overlongAttribute = ByteBuffer.allocate(8).order(ByteOrder.nativeOrder());
        overlongAttribute.putShort((short) 12).putShort((short) 1).putInt(5);
        assertThatThrownBy(() -> NetlinkAttribute.parseAll(overlongAttribute.flip()))
                .isInstanceOf(ProtocolException.class).hasMessageContaining("claims 12 bytes");

        ByteBuffer u16 = ByteBuffer.allocate(8).order(ByteOrder.nativeOrder());
        u16.putShort((short) 6).putShort((short) 1).putShort((short) 7).putShort((short) 0);
        assertThatThrownBy(() -> NetlinkAttribute.parseAll(u16.flip()).getFirst().u32())
                .isInstanceOf(ProtocolException.class).hasMessageContaining("too short for a u32");
    }

    @Test
    void builderRefusesWhatNetlinkCannotCarry() {
        var builder = new GenericNetlinkMessageBuilder(0x20, 1, 1, 0, 1, 1);
        assertThatThrownBy(() -> builder.putString(1, "a\0b"))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("NUL");
        assertThatThrownBy(() -> builder.putString(1, "x".repeat(70_000)))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("65535");
        assertThatThrownBy(() -> new GenericNetlinkFamilyRequest("sixteen-byte-nam"))
                .isInstanceOf(IllegalArgumentException.class);
    }
}
