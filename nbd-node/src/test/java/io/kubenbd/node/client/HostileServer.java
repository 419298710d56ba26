package io.kubenbd.node.client;

import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.HandshakeFlags;
import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.OptionReplyCodec;
import io.kubenbd.node.protocol.OptionReplyType;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.RequestHeader;
import io.kubenbd.node.protocol.TransmissionFlags;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * A test-only NBD server on a loopback socket for one client connection: it speaks the fixed
 * newstyle greeting correctly, answers options through a {@link Handshake} (the polite one by
 * default) and then hands every request to a {@link Transmission} that writes whatever
 * crafted reply a test wants. It records when the client hangs up, which is how the tests
 * see that a client dropped a connection after a protocol violation.
 */
public final class HostileServer implements AutoCloseable {
    static final long SIZE = 1 << 20;
    static final int CONTEXT_ID = 7;

    /** Answers one option; returns true when the handshake ended (GO acknowledged). */
    interface Handshake {
        boolean answer(int option, byte[] data, DataOutputStream out) throws IOException;
    }

    /** Answers one transmission request (its payload, if any, was consumed). */
    public interface Transmission {
        void answer(RequestHeader request, DataOutputStream out) throws IOException;
    }

    private final ServerSocket listener;
    private final Thread thread;
    private final CountDownLatch clientGone = new CountDownLatch(1);
    private final ReplyStyle style;
    private volatile Socket socket;
    private volatile Throwable failure;

    private HostileServer(ReplyStyle style, Handshake handshake, Transmission transmission) throws IOException {
        this.style = style;
        listener = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
        thread = Thread.ofPlatform().daemon().name("hostile-nbd-server").start(() -> serve(handshake, transmission));
    }

    /** Negotiates {@code style} politely and then answers requests with {@code transmission}. */
    public static HostileServer transmission(ReplyStyle style, Transmission transmission) throws IOException {
        return new HostileServer(style, polite(style), transmission);
    }

    /** Answers options with {@code handshake}; a request after GO makes the server hang up. */
    static HostileServer handshake(Handshake handshake) throws IOException {
        return new HostileServer(ReplyStyle.SIMPLE, handshake, (request, out) -> {
            throw new EOFException("no transmission in this test");
        });
    }

    /**
     * Acknowledges STRUCTURED_REPLY when {@code style} is STRUCTURED and EXTENDED_HEADERS when it is
     * EXTENDED (refusing the other), sets one meta context ({@link #CONTEXT_ID}) and describes a 1 MiB
     * export for INFO and GO.
     */
    static Handshake polite(ReplyStyle style) {
        return (option, data, out) -> {
            switch (option) {
                case OptionType.STRUCTURED_REPLY -> optionReply(out, option,
                        style == ReplyStyle.STRUCTURED ? new OptionReply.Ack() : unsupported());
                case OptionType.EXTENDED_HEADERS -> optionReply(out, option,
                        style == ReplyStyle.EXTENDED ? new OptionReply.Ack() : unsupported());
                case OptionType.SET_META_CONTEXT, OptionType.LIST_META_CONTEXT -> {
                    optionReply(out, option, new OptionReply.MetaContext(CONTEXT_ID, "base:allocation"));
                    optionReply(out, option, new OptionReply.Ack());
                }
                case OptionType.INFO, OptionType.GO -> {
                    optionReply(out, option, new OptionReply.InfoExport(SIZE, TransmissionFlags.HAS_FLAGS
                            | TransmissionFlags.SEND_FLUSH | TransmissionFlags.SEND_DF));
                    optionReply(out, option, new OptionReply.Ack());
                    return option == OptionType.GO;
                }
                default -> optionReply(out, option, unsupported());
            }
            return false;
        };
    }

    private static OptionReply unsupported() {
        return new OptionReply.Error(OptionReplyType.ERR_UNSUP, "");
    }

    static void optionReply(DataOutputStream out, int option, OptionReply reply) throws IOException {
        ByteBuf buffer = Unpooled.buffer();
        OptionReplyCodec.encode(option, reply, buffer);
        out.write(ByteBufUtil.getBytes(buffer));
        out.flush();
    }

    /** An option reply header announcing {@code length} payload bytes; the caller writes (or withholds) them. */
    static void optionReplyHeader(DataOutputStream out, int option, int type, long length) throws IOException {
        out.writeLong(Magic.OPTION_REPLY);
        out.writeInt(option);
        out.writeInt(type);
        out.writeInt((int) length);
    }

    static void simpleReply(DataOutputStream out, int error, long cookie) throws IOException {
        out.writeInt(Magic.SIMPLE_REPLY);
        out.writeInt(error);
        out.writeLong(cookie);
    }

    /** A structured chunk header: 32-bit length, no offset field. */
    public static void structuredHeader(DataOutputStream out, int flags, int type, long cookie, long length) throws IOException {
        out.writeInt(Magic.STRUCTURED_REPLY);
        out.writeShort(flags);
        out.writeShort(type);
        out.writeLong(cookie);
        out.writeInt((int) length);
    }

    static void extendedHeader(DataOutputStream out, int flags, int type, long cookie, long offset, long length)
            throws IOException {
        out.writeInt(Magic.EXTENDED_REPLY);
        out.writeShort(flags);
        out.writeShort(type);
        out.writeLong(cookie);
        out.writeLong(offset);
        out.writeLong(length);
    }

    /** A chunk header in the style negotiated, echoing the request's offset when extended. */
    void chunkHeader(DataOutputStream out, RequestHeader request, int flags, int type, long length) throws IOException {
        if (style == ReplyStyle.EXTENDED) {
            extendedHeader(out, flags, type, request.cookie(), request.offset(), length);
        } else {
            structuredHeader(out, flags, type, request.cookie(), length);
        }
    }

    public int port() {
        return listener.getLocalPort();
    }

    /** True once the client closed its end (EOF or reset seen) within {@code timeout}. */
    boolean clientHungUp(Duration timeout) throws InterruptedException {
        return clientGone.await(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    /** What went wrong on the server's side other than the client hanging up, or null. */
    Throwable failure() {
        return failure;
    }

    private void serve(Handshake handshake, Transmission transmission) {
        try (Socket s = listener.accept()) {
            socket = s;
            DataInputStream in = new DataInputStream(new BufferedInputStream(s.getInputStream()));
            DataOutputStream out = new DataOutputStream(new BufferedOutputStream(s.getOutputStream(), 1 << 16));
            out.writeLong(Magic.NBDMAGIC);
            out.writeLong(Magic.IHAVEOPT);
            out.writeShort(HandshakeFlags.FIXED_NEWSTYLE | HandshakeFlags.NO_ZEROES);
            out.flush();
            in.readInt();
            boolean transmitting = false;
            while (!transmitting) {
                if (in.readLong() != Magic.IHAVEOPT) {
                    throw new IOException("client option without IHAVEOPT");
                }
                int option = in.readInt();
                byte[] data = in.readNBytes(in.readInt());
                transmitting = handshake.answer(option, data, out);
                out.flush();
            }
            while (true) {
                RequestHeader request = readRequest(in);
                if (request.type() == CommandType.DISC) {
                    break;
                }
                transmission.answer(request, out);
                out.flush();
            }
            // Wait for the client to close: the tests ask whether it did.
            while (in.read() >= 0) {
                // drain
            }
        } catch (EOFException | java.net.SocketException e) {
            // The client hung up (EOF, or a reset/broken pipe while we wrote).
        } catch (IOException | RuntimeException e) {
            failure = e;
        } finally {
            clientGone.countDown();
        }
    }

    private RequestHeader readRequest(DataInputStream in) throws IOException {
        int magic = in.readInt();
        int flags = in.readUnsignedShort();
        int type = in.readUnsignedShort();
        long cookie = in.readLong();
        long offset = in.readLong();
        long length = magic == Magic.EXTENDED_REQUEST ? in.readLong() : Integer.toUnsignedLong(in.readInt());
        if (type == CommandType.WRITE) {
            in.skipNBytes(length);
        }
        return new RequestHeader(flags, type, cookie, offset, length);
    }

    @Override
    public void close() throws IOException {
        listener.close();
        Socket s = socket;
        if (s != null) {
            s.close();
        }
        try {
            thread.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
