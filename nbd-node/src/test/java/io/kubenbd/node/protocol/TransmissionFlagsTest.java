package io.kubenbd.node.protocol;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** Flag names as {@code qemu-nbd --list} prints them after "export flags: 0x... (". */
class TransmissionFlagsTest {

    @Test
    void hasFlagsAloneHasNoNames() {
        assertThat(TransmissionFlags.names(TransmissionFlags.HAS_FLAGS)).isEmpty();
        assertThat(TransmissionFlags.names(0)).isEmpty();
    }

    @Test
    void aTypicalWritableExportInBitOrder() {
        // qemu-nbd serving a raw file: 0x0ded ( flush fua trim zeroes df multi cache fast-zero )
        int flags = TransmissionFlags.HAS_FLAGS | TransmissionFlags.SEND_FLUSH | TransmissionFlags.SEND_FUA
                | TransmissionFlags.SEND_TRIM | TransmissionFlags.SEND_WRITE_ZEROES | TransmissionFlags.SEND_DF
                | TransmissionFlags.CAN_MULTI_CONN | TransmissionFlags.SEND_CACHE | TransmissionFlags.SEND_FAST_ZERO;
        assertThat(flags).isEqualTo(0x0ded);
        assertThat(String.join(" ", TransmissionFlags.names(flags)))
                .isEqualTo("flush fua trim zeroes df multi cache fast-zero");
    }

    @Test
    void everyDefinedBitHasQemusName() {
        assertThat(TransmissionFlags.names(0xFFFF)).containsExactly("readonly", "flush", "fua", "rotational", "trim",
                "zeroes", "df", "multi", "resize", "cache", "fast-zero", "block-status-payload");
        assertThat(TransmissionFlags.names(TransmissionFlags.READ_ONLY | TransmissionFlags.ROTATIONAL))
                .containsExactly("readonly", "rotational");
        assertThat(TransmissionFlags.names(TransmissionFlags.SEND_RESIZE | TransmissionFlags.BLOCK_STATUS_PAYLOAD))
                .containsExactly("resize", "block-status-payload");
    }

    @Test
    void undefinedBitsAreIgnored() {
        assertThat(TransmissionFlags.names(TransmissionFlags.HAS_FLAGS | 1 << 13 | 1 << 15 | 1 << 20)).isEmpty();
    }
}
