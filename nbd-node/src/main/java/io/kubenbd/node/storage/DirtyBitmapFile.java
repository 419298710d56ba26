package io.kubenbd.node.storage;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.zip.CRC32C;

/**
 * Reads and writes one bitmap file; the layout is documented on {@link DirtyBitmapSet}.
 * Reading never throws for bad contents: the bitmap comes back
 * {@link DirtyBitmapState#INCONSISTENT} with the reason instead.
 */
final class DirtyBitmapFile {
    static final String SUFFIX = ".bitmap";
    static final String TEMP_SUFFIX = ".tmp";
    static final byte[] MAGIC = "KNBDBMP1".getBytes(StandardCharsets.US_ASCII);
    static final int VERSION = 1;
    static final int FLAG_IN_USE = 1;
    static final int FLAG_FROZEN = 2;
    static final int KNOWN_FLAGS = FLAG_IN_USE | FLAG_FROZEN;
    /** Bytes before the name: magic, version, flags, granularity, export size, sequence, name length. */
    static final int FIXED_HEADER = 8 + 4 + 4 + 8 + 8 + 8 + 2;
    static final int MAX_NAME = 128;
    private static final int CHUNK = 64 * 1024;

    static final String UNCLEAN = "server did not shut down cleanly; writes may be missing: clear or remove it";

    private DirtyBitmapFile() {}

    static Path fileOf(Path dir, String name) {
        return dir.resolve(name + SUFFIX);
    }

    /** Temporary names start with a dot, which no bitmap name does, so they never collide with a bitmap file. */
    static Path tempOf(Path dir, String name) {
        return dir.resolve("." + name + SUFFIX + TEMP_SUFFIX);
    }

    static long fileLength(int nameLength, int words) {
        return FIXED_HEADER + nameLength + 8L * words + 4;
    }

    /**
     * Writes the bitmap atomically: a temporary file is written and fsynced, renamed over the
     * bitmap file, and the directory is fsynced. Concurrent marks may or may not be included.
     */
    static void write(Path dir, DirtyBitmap bitmap, int flags) throws IOException {
        Path tmp = tempOf(dir, bitmap.name);
        boolean renamed = false;
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                    StandardOpenOption.TRUNCATE_EXISTING)) {
                CRC32C crc = new CRC32C();
                ByteBuffer buf = ByteBuffer.allocate(CHUNK);
                byte[] name = bitmap.name.getBytes(StandardCharsets.US_ASCII);
                buf.put(MAGIC).putInt(VERSION).putInt(flags).putLong(bitmap.granularity).putLong(bitmap.exportSize)
                        .putLong(bitmap.sequence).putShort((short) name.length).put(name);
                for (int w = 0; w < bitmap.wordCount(); w++) {
                    if (buf.remaining() < Long.BYTES) {
                        drain(ch, buf, crc);
                    }
                    buf.putLong(bitmap.word(w));
                }
                drain(ch, buf, crc);
                buf.putInt((int) crc.getValue());
                buf.flip();
                writeFully(ch, buf);
                ch.force(true);
            }
            Files.move(tmp, fileOf(dir, bitmap.name), StandardCopyOption.ATOMIC_MOVE,
                    StandardCopyOption.REPLACE_EXISTING);
            renamed = true;
            fsyncDirectory(dir);
        } finally {
            if (!renamed) {
                Files.deleteIfExists(tmp);
            }
        }
    }

    static void fsyncDirectory(Path dir) throws IOException {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        }
    }

    private static void drain(FileChannel ch, ByteBuffer buf, CRC32C crc) throws IOException {
        buf.flip();
        crc.update(buf.duplicate());
        writeFully(ch, buf);
        buf.clear();
    }

    private static void writeFully(FileChannel ch, ByteBuffer buf) throws IOException {
        while (buf.hasRemaining()) {
            ch.write(buf);
        }
    }

    private static void readFully(FileChannel ch, ByteBuffer buf, long position) throws IOException {
        long pos = position;
        while (buf.hasRemaining()) {
            int n = ch.read(buf, pos);
            if (n < 0) {
                throw new IOException("unexpected end of file");
            }
            pos += n;
        }
    }

    /**
     * Loads {@code file}, which must be named after {@code name}. Anything that keeps its
     * contents from being trusted gives an {@link DirtyBitmapState#INCONSISTENT} bitmap (empty,
     * sized for {@code exportSize}) with the reason; only I/O errors throw.
     */
    static DirtyBitmap read(Path file, String name, long exportSize) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long length = ch.size();
            if (length < FIXED_HEADER + 1 + 4) {
                return broken(name, exportSize, 0, Long.MAX_VALUE, "bitmap file is truncated (" + length
                        + " bytes): clear or remove it");
            }
            long body = length - 4;
            CRC32C crc = new CRC32C();
            ByteBuffer buf = ByteBuffer.allocate(CHUNK);
            for (long pos = 0; pos < body; ) {
                buf.clear().limit((int) Math.min(CHUNK, body - pos));
                readFully(ch, buf, pos);
                buf.flip();
                pos += buf.remaining();
                crc.update(buf);
            }
            ByteBuffer tail = ByteBuffer.allocate(4);
            readFully(ch, tail, body);
            if (tail.getInt(0) != (int) crc.getValue()) {
                return broken(name, exportSize, 0, Long.MAX_VALUE,
                        "bitmap file checksum mismatch (corrupt or torn file): clear or remove it");
            }

            ByteBuffer header = ByteBuffer.allocate((int) Math.min(body, FIXED_HEADER + MAX_NAME));
            readFully(ch, header, 0);
            header.flip();
            byte[] magic = new byte[MAGIC.length];
            header.get(magic);
            int version = header.getInt();
            int flags = header.getInt();
            long granularity = header.getLong();
            long fileExportSize = header.getLong();
            long sequence = header.getLong();
            int nameLength = Short.toUnsignedInt(header.getShort());
            if (!Arrays.equals(magic, MAGIC)) {
                return broken(name, exportSize, 0, Long.MAX_VALUE,
                        "not a kube-nbd bitmap file (bad magic): remove it");
            }
            if (version != VERSION) {
                return broken(name, exportSize, 0, Long.MAX_VALUE, "unsupported bitmap format version " + version
                        + " (this server reads version " + VERSION + "): clear or remove it");
            }
            String fileName = nameLength >= 1 && nameLength <= MAX_NAME && header.remaining() >= nameLength
                    ? new String(header.array(), header.position(), nameLength, StandardCharsets.US_ASCII)
                    : null;
            if ((flags & ~KNOWN_FLAGS) != 0 || !DirtyBitmapSet.validGranularity(granularity) || fileExportSize < 0
                    || sequence < 0 || !name.equals(fileName)) {
                return broken(name, exportSize, granularity, sequence < 0 ? Long.MAX_VALUE : sequence,
                        "bitmap file header is invalid: clear or remove it");
            }
            long words = DirtyBitmap.wordCountOrMinus1(fileExportSize, granularity);
            if (words < 0 || length != fileLength(nameLength, (int) words)) {
                return broken(name, exportSize, granularity, sequence, "bitmap file has " + length
                        + " bytes, its header calls for a different length: clear or remove it");
            }
            if (fileExportSize != exportSize) {
                return broken(name, exportSize, granularity, sequence, "export size changed from " + fileExportSize
                        + " to " + exportSize + " bytes since the bitmap was saved: clear or remove it");
            }
            if ((flags & FLAG_IN_USE) != 0) {
                return broken(name, exportSize, granularity, sequence, UNCLEAN);
            }

            DirtyBitmap bitmap = new DirtyBitmap(name, granularity, exportSize, sequence,
                    (flags & FLAG_FROZEN) != 0 ? DirtyBitmapState.FROZEN : DirtyBitmapState.RECORDING);
            long pos = FIXED_HEADER + nameLength;
            int w = 0;
            while (w < bitmap.wordCount()) {
                buf.clear().limit((int) Math.min(CHUNK, 8L * (bitmap.wordCount() - w)));
                readFully(ch, buf, pos);
                buf.flip();
                pos += buf.remaining();
                while (buf.hasRemaining()) {
                    bitmap.setWord(w++, buf.getLong());
                }
            }
            long granules = bitmap.granules;
            if ((granules & 63) != 0 && (bitmap.word(bitmap.wordCount() - 1) & (-1L << (granules & 63))) != 0) {
                return broken(name, exportSize, granularity, sequence,
                        "bitmap file marks granules past the export end: clear or remove it");
            }
            return bitmap;
        }
    }

    /** An empty inconsistent bitmap; the granularity is the file's when usable for this export. */
    private static DirtyBitmap broken(String name, long exportSize, long granularity, long sequence, String reason) {
        long g = DirtyBitmapSet.validGranularity(granularity) ? granularity : DirtyBitmapSet.DEFAULT_GRANULARITY;
        while (DirtyBitmap.wordCountOrMinus1(exportSize, g) < 0 && g < DirtyBitmapSet.MAX_GRANULARITY) {
            g <<= 1;
        }
        DirtyBitmap bitmap = new DirtyBitmap(name, g, exportSize, sequence, DirtyBitmapState.INCONSISTENT);
        bitmap.inconsistent(reason);
        return bitmap;
    }
}
