package io.kubenbd.node.testing;

import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.OptionType;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.function.IntToLongFunction;

/** The fewest bytes a raw-socket test needs: the handshake to transmission, and pipelined requests. */
public final class RawNbd {
    private RawNbd() {}

    /** Reads the server's greeting: true if it came, false if the server closed the connection instead. */
    public static boolean greeted(InputStream in) throws IOException {
        byte[] greeting = new byte[18];
        return in.readNBytes(greeting, 0, 18) == 18 && ByteBuffer.wrap(greeting).getLong() == Magic.NBDMAGIC;
    }

    /** After the greeting: fixed newstyle without zeroes, NBD_OPT_EXPORT_NAME, the export's size and flags. */
    public static void exportName(InputStream input, OutputStream output, String name) throws IOException {
        DataInputStream in = new DataInputStream(input);
        DataOutputStream out = new DataOutputStream(output);
        byte[] data = name.getBytes(StandardCharsets.UTF_8);
        out.writeInt(3);
        out.writeLong(Magic.IHAVEOPT);
        out.writeInt(OptionType.EXPORT_NAME);
        out.writeInt(data.length);
        out.write(data);
        out.flush();
        in.readFully(new byte[10]);
    }

    /** {@code count} compact READs of {@code length} bytes, cookie i at {@code offset(i)}, as one buffer. */
    public static ByteBuffer reads(int count, int length, IntToLongFunction offset) {
        ByteBuffer b = ByteBuffer.allocate(28 * count);
        for (int i = 0; i < count; i++) {
            b.putInt(Magic.REQUEST).putShort((short) 0).putShort((short) CommandType.READ).putLong(i)
                    .putLong(offset.applyAsLong(i)).putInt(length);
        }
        return b.flip();
    }
}
