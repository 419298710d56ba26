package io.kubenbd.node.csi;

import io.kubenbd.node.testing.ScratchDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * Writes the on-disk signatures the tests need straight into an image, so they do not depend on
 * partitioning or LVM tools being installed: the bytes are what blkid looks for.
 */
final class DiskSignatures {
    private DiskSignatures() {}

    /** A DOS (MBR) partition table with one Linux partition from sector 2048, as most VM disk images start. */
    static void dosPartitionTable(Path image) throws IOException {
        ByteBuffer mbr = ByteBuffer.allocate(512).order(ByteOrder.LITTLE_ENDIAN);
        mbr.position(446);
        mbr.put((byte) 0).put(new byte[3]).put((byte) 0x83).put(new byte[3]).putInt(2048).putInt(8192);
        mbr.put(510, (byte) 0x55).put(511, (byte) 0xAA);
        ScratchDir.writeAt(image, 0, mbr.array());
    }

    /**
     * An LVM2 physical volume label in sector 1 ("LABELONE", then "LVM2 001"), with the checksum
     * LVM uses (CRC-32 from 0xf597a6cf, no final inversion) over the label from its offset field on.
     */
    static void lvm2Label(Path image) throws IOException {
        ByteBuffer label = ByteBuffer.allocate(512).order(ByteOrder.LITTLE_ENDIAN);
        label.put("LABELONE".getBytes(StandardCharsets.US_ASCII)).putLong(1).putInt(0).putInt(32)
                .put("LVM2 001".getBytes(StandardCharsets.US_ASCII))
                .put("0123456789abcdefghijklmnopqrstuv".getBytes(StandardCharsets.US_ASCII));
        label.putInt(16, lvmCrc(label.array(), 20, 512 - 20));
        ScratchDir.writeAt(image, 512, label.array());
    }

    private static int lvmCrc(byte[] data, int from, int length) {
        int crc = 0xf597a6cf;
        for (int i = from; i < from + length; i++) {
            crc ^= data[i] & 0xff;
            for (int bit = 0; bit < 8; bit++) {
                crc = (crc >>> 1) ^ ((crc & 1) != 0 ? 0xedb88320 : 0);
            }
        }
        return crc;
    }
}
