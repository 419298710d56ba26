package io.kubenbd.node.client;

import io.kubenbd.node.protocol.CommandFlags;
import io.kubenbd.node.protocol.CommandType;
import io.kubenbd.node.protocol.HandshakeFlags;
import io.kubenbd.node.protocol.InfoType;
import io.kubenbd.node.protocol.Limits;
import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.NbdError;
import io.kubenbd.node.protocol.OptionCodec;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.OptionReplyCodec;
import io.kubenbd.node.protocol.OptionReplyType;
import io.kubenbd.node.protocol.OptionRequest;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.protocol.Reply;
import io.kubenbd.node.protocol.ReplyChunk;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.RequestHeader;
import io.kubenbd.node.tls.ClientTlsCredentials;
import io.kubenbd.node.tls.NegotiatedTls;
import io.kubenbd.node.tls.PskTlsClientEndpoint;
import io.kubenbd.node.tls.X509ClientContexts;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import org.bouncycastle.tls.TlsClientProtocol;
import org.bouncycastle.tls.TlsFatalAlert;
import org.bouncycastle.tls.TlsFatalAlertReceived;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.Closeable;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One NBD connection, blocking. Negotiate with the option methods, enter transmission with
 * {@link #go}, then either use the one-request helpers ({@link #read}, {@link #write}, ...)
 * or {@link #send} several requests and collect their replies with {@link #receive} in
 * whatever order the server answers. Not thread-safe: one caller drives a connection.
 */
public final class NbdClient implements Closeable {
    /** Most replies one option may get (an export list, meta contexts, info items). */
    static final int MAX_OPTION_REPLIES = 1 << 16;
    /** Most payload bytes all the replies to one option may carry together. */
    static final int MAX_OPTION_REPLY_BYTES = 16 << 20;

    private static final int BUFFER = 1 << 16;

    private final Socket socket;
    private final String host;
    private final int port;
    /** The socket's input, buffered: the plaintext stream before STARTTLS, TLS records after. */
    private final BufferedInputStream socketIn;
    private DataInputStream in;
    private DataOutputStream out;
    /** What to close: the socket, or the TLS layer over it (which sends close_notify first). */
    private Closeable transport;
    private NegotiatedTls tls;
    private final boolean noZeroes;
    private final AtomicLong cookies = new AtomicLong();
    /** The meta context ids the last NBD_OPT_SET_META_CONTEXT returned. */
    private final Set<Integer> contexts = new HashSet<>();
    /** Holds the server's replies to the requests in flight; made at the first request. */
    private ReplyReader replies;
    private ReplyStyle style = ReplyStyle.SIMPLE;
    private ExportInfo export;
    /** Why the connection was dropped after the server broke the protocol, or null while it is usable. */
    private String dropped;

    private NbdClient(Socket socket, String host, int port) throws IOException {
        this.socket = socket;
        this.host = host;
        this.port = port;
        this.transport = socket;
        this.socketIn = new BufferedInputStream(socket.getInputStream(), BUFFER);
        this.in = new DataInputStream(socketIn);
        this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), BUFFER));
        long magic = in.readLong();
        long newstyle = in.readLong();
        if (magic != Magic.NBDMAGIC || newstyle != Magic.IHAVEOPT) {
            throw new NbdProtocolException("not a newstyle NBD server (greeting 0x" + Long.toHexString(magic) + " 0x"
                    + Long.toHexString(newstyle) + ")");
        }
        int serverFlags = in.readUnsignedShort();
        if ((serverFlags & HandshakeFlags.FIXED_NEWSTYLE) == 0) {
            throw new NbdProtocolException("server does not speak fixed newstyle");
        }
        noZeroes = (serverFlags & HandshakeFlags.NO_ZEROES) != 0;
        out.writeInt(HandshakeFlags.CLIENT_FIXED_NEWSTYLE | (noZeroes ? HandshakeFlags.CLIENT_NO_ZEROES : 0));
        out.flush();
    }

    public static NbdClient connect(String host, int port, Duration timeout) throws IOException {
        return connect(host, port, null, timeout);
    }

    /**
     * @param localAddress the address to connect from, or null for the system's choice; the server
     *                     tells consumers apart by it (see the writer claim in the README)
     */
    public static NbdClient connect(String host, int port, InetAddress localAddress, Duration timeout) throws IOException {
        Socket socket = new Socket();
        try {
            socket.setTcpNoDelay(true);
            if (localAddress != null) {
                socket.bind(new InetSocketAddress(localAddress, 0));
            }
            socket.connect(new InetSocketAddress(host, port), (int) timeout.toMillis());
            socket.setSoTimeout((int) timeout.toMillis());
            return new NbdClient(socket, host, port);
        } catch (IOException e) {
            socket.close();
            throw e;
        }
    }

    public ReplyStyle style() {
        return style;
    }

    /** The TLS protocol and cipher suite after {@link #startTls}, or null on a plaintext connection. */
    public NegotiatedTls tls() {
        return tls;
    }

    /** The export entered with {@link #go}, or null during the handshake. */
    public ExportInfo export() {
        return export;
    }

    // ---------------------------------------------------------------- handshake

    /** Sends an option and returns every reply up to and including the final one. */
    public List<OptionReply> option(OptionRequest request) throws IOException {
        ensureUsable();
        int option = request.option();
        try {
            sendOption(option, request);
            int partialType = switch (option) {
                case OptionType.LIST -> OptionReplyType.SERVER;
                case OptionType.INFO, OptionType.GO -> OptionReplyType.INFO;
                case OptionType.LIST_META_CONTEXT, OptionType.SET_META_CONTEXT -> OptionReplyType.META_CONTEXT;
                default -> OptionReplyType.ACK; // none: every reply is final
            };
            List<OptionReply> replies = new ArrayList<>();
            Set<Integer> contextIds = new HashSet<>();
            long bytes = 0;
            while (true) {
                if (replies.size() == MAX_OPTION_REPLIES || bytes > MAX_OPTION_REPLY_BYTES) {
                    throw new NbdProtocolException("server sent " + replies.size() + " replies (" + bytes
                            + " bytes) to " + OptionType.name(option) + " and more; the limit is " + MAX_OPTION_REPLIES
                            + " replies and " + MAX_OPTION_REPLY_BYTES + " bytes");
                }
                int[] length = new int[1];
                OptionReply reply = readOptionReply(in, option, length);
                bytes += length[0];
                replies.add(reply);
                if (reply instanceof OptionReply.Ack || reply instanceof OptionReply.Error) {
                    return replies;
                }
                if (reply.type() != partialType) {
                    throw new NbdProtocolException("server answered " + OptionType.name(option) + " with "
                            + OptionReplyType.name(reply.type()));
                }
                if (option == OptionType.SET_META_CONTEXT && reply instanceof OptionReply.MetaContext m
                        && !contextIds.add(m.id())) {
                    throw new NbdProtocolException("server returned context id " + Integer.toUnsignedString(m.id())
                            + " twice for " + OptionType.name(option));
                }
            }
        } catch (IOException e) {
            throw drop(e);
        }
    }

    /**
     * Sends NBD_OPT_STARTTLS and, on NBD_REP_ACK, runs the TLS handshake; everything after
     * goes over TLS. Send it first: the spec resets all negotiated state (reply style, meta
     * contexts) at the upgrade, and this client does too. An error reply (NBD_REP_ERR_POLICY
     * from a server without TLS, ...) is an {@link OptionRefusedException} and the connection
     * stays usable in plaintext; a failed handshake is an IOException naming the server and
     * the TLS alert, and the connection is closed.
     */
    public NegotiatedTls startTls(ClientTlsCredentials credentials) throws IOException {
        if (tls != null) {
            throw new IllegalStateException("TLS is already on for " + server());
        }
        if (export != null) {
            throw new IllegalStateException("STARTTLS after the handshake ended");
        }
        // Build the TLS context first: a bad CA file should not cost the server a STARTTLS.
        SSLContext x509 = credentials instanceof ClientTlsCredentials.X509 x
                ? X509ClientContexts.create(x) : null;
        OptionReply reply = finalReply(option(new OptionRequest.StartTls()));
        check(OptionType.STARTTLS, reply);
        if (!(reply instanceof OptionReply.Ack)) {
            close();
            throw new NbdProtocolException(server() + " answered STARTTLS with " + OptionReplyType.name(reply.type()));
        }
        if (socketIn.available() > 0) {
            close();
            throw new NbdProtocolException(server() + " sent data after acknowledging STARTTLS, before the TLS handshake");
        }
        try {
            tls = switch (credentials) {
                case ClientTlsCredentials.Psk psk -> handshakePsk(psk);
                case ClientTlsCredentials.X509 x -> handshakeX509(x509, x);
            };
        } catch (IOException | RuntimeException e) {
            close();
            throw e;
        }
        style = ReplyStyle.SIMPLE;
        contexts.clear();
        replies = null;
        return tls;
    }

    private NegotiatedTls handshakePsk(ClientTlsCredentials.Psk psk) throws IOException {
        PskTlsClientEndpoint endpoint = new PskTlsClientEndpoint(psk.key());
        // Bouncy Castle writes each record with one write, so the raw socket output is fine there.
        EofWatch watched = new EofWatch(socketIn);
        TlsClientProtocol protocol = new TlsClientProtocol(watched, socket.getOutputStream());
        try {
            protocol.connect(endpoint);
        } catch (IOException e) {
            String alert = endpoint.lastAlert();
            String why;
            if (alert != null && alert.startsWith("server")) {
                why = alert;
            } else if (watched.eof) {
                // GnuTLS (qemu-nbd) hangs up without an alert when the PSK binder does not verify.
                why = "the server closed the connection without an alert (wrong key, unknown identity "
                        + "or no common cipher suite?)";
            } else {
                why = alert != null ? alert : describe(e);
            }
            throw new IOException("TLS-PSK handshake with " + server() + " as '" + psk.key().identity() + "' failed: "
                    + why, e);
        } finally {
            endpoint.wipe();
        }
        useStreams(protocol.getInputStream(), protocol.getOutputStream());
        transport = protocol::close;
        return endpoint.negotiated();
    }

    private NegotiatedTls handshakeX509(SSLContext context, ClientTlsCredentials.X509 credentials) throws IOException {
        SSLSocket ssl = (SSLSocket) context.getSocketFactory().createSocket(socket, host, port, true);
        SSLParameters parameters = ssl.getSSLParameters();
        if (credentials.verifyHostname()) {
            parameters.setEndpointIdentificationAlgorithm("HTTPS");
        }
        ssl.setSSLParameters(parameters);
        ssl.setUseClientMode(true);
        try {
            ssl.startHandshake();
        } catch (IOException e) {
            throw new IOException("TLS handshake with " + server() + " failed: " + describe(e), e);
        }
        useStreams(ssl.getInputStream(), ssl.getOutputStream());
        transport = ssl;
        return new NegotiatedTls(ssl.getSession().getProtocol(), ssl.getSession().getCipherSuite());
    }

    /** Remembers whether the server hung up, to tell that apart from a handshake we refused. */
    private static final class EofWatch extends java.io.FilterInputStream {
        boolean eof;

        EofWatch(InputStream in) {
            super(in);
        }

        @Override
        public int read() throws IOException {
            int b = super.read();
            eof |= b < 0;
            return b;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            int n = super.read(b, off, len);
            eof |= n < 0;
            return n;
        }
    }

    private void useStreams(InputStream tlsIn, java.io.OutputStream tlsOut) {
        in = new DataInputStream(new BufferedInputStream(tlsIn, BUFFER));
        out = new DataOutputStream(new BufferedOutputStream(tlsOut, BUFFER));
    }

    private String server() {
        return host + ":" + port;
    }

    private static String describe(Throwable e) {
        StringBuilder text = new StringBuilder();
        for (Throwable t = e; t != null; t = t.getCause()) {
            String part = switch (t) {
                case TlsFatalAlertReceived r -> "server sent alert "
                        + org.bouncycastle.tls.AlertDescription.getName(r.getAlertDescription());
                case TlsFatalAlert a -> "alert " + org.bouncycastle.tls.AlertDescription.getName(a.getAlertDescription())
                        + (a.getMessage() == null ? "" : " (" + a.getMessage() + ")");
                case EOFException eof -> "server closed the connection";
                default -> t.getMessage() == null ? t.getClass().getSimpleName() : t.getMessage();
            };
            if (!text.toString().contains(part)) {
                text.append(text.isEmpty() ? "" : ": ").append(part);
            }
        }
        return text.toString();
    }

    /** Asks for extended headers; true if the server agreed. */
    public boolean negotiateExtendedHeaders() throws IOException {
        if (finalReply(option(new OptionRequest.ExtendedHeaders())) instanceof OptionReply.Ack) {
            style = ReplyStyle.EXTENDED;
            return true;
        }
        return false;
    }

    /** Asks for structured replies; true if the server agreed. */
    public boolean negotiateStructuredReplies() throws IOException {
        if (finalReply(option(new OptionRequest.StructuredReply())) instanceof OptionReply.Ack) {
            style = ReplyStyle.STRUCTURED;
            return true;
        }
        return false;
    }

    /** Extended headers if the server has them, else structured replies; the style in use afterwards. */
    public ReplyStyle negotiateBestReplies() throws IOException {
        if (!negotiateExtendedHeaders()) {
            negotiateStructuredReplies();
        }
        return style;
    }

    public List<OptionReply.Server> listExports() throws IOException {
        List<OptionReply> replies = option(new OptionRequest.ListExports());
        check(OptionType.LIST, finalReply(replies));
        return replies.stream().filter(OptionReply.Server.class::isInstance).map(OptionReply.Server.class::cast).toList();
    }

    public ExportInfo info(String name) throws IOException {
        return exportInfo(false, name);
    }

    /** Ends the handshake on {@code name}; transmission requests may follow. */
    public ExportInfo go(String name) throws IOException {
        export = exportInfo(true, name);
        return export;
    }

    /**
     * The transmission phase's bytes from the server (decrypted under TLS), for handing a
     * negotiated connection to another NBD speaker such as the kernel's nbd driver. Whoever reads
     * them owns the conversation: this client must send no requests of its own any more.
     */
    public InputStream transmissionInput() {
        return in;
    }

    /** The transmission phase's bytes to the server (encrypted under TLS); see {@link #transmissionInput}. */
    public OutputStream transmissionOutput() {
        return out;
    }

    public List<OptionReply.MetaContext> listMetaContexts(String exportName, List<String> queries) throws IOException {
        return metaContexts(false, exportName, queries);
    }

    public List<OptionReply.MetaContext> setMetaContexts(String exportName, List<String> queries) throws IOException {
        List<OptionReply.MetaContext> set = metaContexts(true, exportName, queries);
        contexts.clear();
        set.forEach(c -> contexts.add(c.id()));
        return set;
    }

    /** Sends NBD_OPT_ABORT and closes. */
    public void abort() throws IOException {
        try {
            sendOption(OptionType.ABORT, new OptionRequest.Abort());
            readOptionReply(in, OptionType.ABORT, new int[1]);
        } catch (EOFException e) {
            // The spec lets a server close instead of acknowledging.
        } finally {
            close();
        }
    }

    private List<OptionReply.MetaContext> metaContexts(boolean set, String exportName, List<String> queries)
            throws IOException {
        OptionRequest request = new OptionRequest.MetaContext(set, exportName, queries);
        List<OptionReply> replies = option(request);
        check(request.option(), finalReply(replies));
        return replies.stream().filter(OptionReply.MetaContext.class::isInstance)
                .map(OptionReply.MetaContext.class::cast).toList();
    }

    private ExportInfo exportInfo(boolean go, String name) throws IOException {
        OptionRequest request = new OptionRequest.Info(go, name,
                List.of(InfoType.NAME, InfoType.DESCRIPTION, InfoType.BLOCK_SIZE));
        List<OptionReply> replies = option(request);
        check(request.option(), finalReply(replies));
        String canonical = name;
        String description = "";
        boolean described = false;
        long size = 0;
        int flags = 0;
        int min = 0, preferred = 0, max = 0;
        for (OptionReply reply : replies) {
            switch (reply) {
                case OptionReply.InfoName n -> canonical = n.name();
                case OptionReply.InfoDescription d -> description = d.description();
                case OptionReply.InfoExport e -> {
                    described = true;
                    size = e.size();
                    flags = e.transmissionFlags();
                }
                case OptionReply.InfoBlockSize b -> {
                    min = b.minimum();
                    preferred = b.preferred();
                    max = b.maximum();
                    checkBlockSizes(b);
                }
                default -> { }
            }
        }
        if (!described) {
            throw drop(new NbdProtocolException(OptionType.name(request.option()) + " succeeded without NBD_INFO_EXPORT"));
        }
        if (size < 0) {
            throw drop(new NbdProtocolException("server sent an export size of " + Long.toUnsignedString(size)
                    + " bytes"));
        }
        return new ExportInfo(canonical, description, size, flags, min, preferred, max);
    }

    /** The spec's rules for NBD_INFO_BLOCK_SIZE: powers of two, minimum at most 64 KiB, maximum not below preferred. */
    private void checkBlockSizes(OptionReply.InfoBlockSize b) throws IOException {
        int min = b.minimum(), preferred = b.preferred();
        if (min <= 0 || min > 1 << 16 || Integer.bitCount(min) != 1 || preferred < min
                || Integer.bitCount(preferred) != 1 || Integer.compareUnsigned(b.maximum(), preferred) < 0) {
            throw drop(new NbdProtocolException("server sent impossible block sizes: minimum "
                    + Integer.toUnsignedString(min) + ", preferred " + Integer.toUnsignedString(preferred)
                    + ", maximum " + Integer.toUnsignedString(b.maximum())));
        }
    }

    private static OptionReply finalReply(List<OptionReply> replies) {
        return replies.getLast();
    }

    private static void check(int option, OptionReply reply) throws IOException {
        if (reply instanceof OptionReply.Error(int type, String message)) {
            throw new OptionRefusedException(option, type, message);
        }
    }

    private void sendOption(int option, OptionRequest request) throws IOException {
        ByteBuf data = Unpooled.buffer();
        OptionCodec.encode(request, data);
        out.writeLong(Magic.IHAVEOPT);
        out.writeInt(option);
        out.writeInt(data.readableBytes());
        data.readBytes(out, data.readableBytes());
        out.flush();
    }

    /**
     * Reads one option reply for {@code option}. Its length is held to what its type can need
     * (strings are at most {@link Limits#MAX_STRING} bytes) before the payload is read, and
     * fixed-size information items must have their exact size.
     *
     * @param length where the payload's length is stored, for the caller's budget
     */
    static OptionReply readOptionReply(DataInputStream in, int option, int[] length) throws IOException {
        long magic = in.readLong();
        int replyOption = in.readInt();
        int type = in.readInt();
        long size = Integer.toUnsignedLong(in.readInt());
        if (magic != Magic.OPTION_REPLY || replyOption != option) {
            throw new NbdProtocolException("bad option reply (magic 0x" + Long.toHexString(magic) + ", option "
                    + replyOption + ", expected " + option + ")");
        }
        int most = switch (type) {
            case OptionReplyType.ACK -> 0;
            case OptionReplyType.SERVER -> 4 + 2 * Limits.MAX_STRING;
            case OptionReplyType.INFO -> 2 + Limits.MAX_STRING;
            case OptionReplyType.META_CONTEXT -> 4 + Limits.MAX_STRING;
            default -> {
                if (!OptionReplyType.isError(type)) {
                    throw new NbdProtocolException("unknown option reply type 0x" + Integer.toHexString(type)
                            + " to " + OptionType.name(option));
                }
                yield Limits.MAX_STRING;
            }
        };
        if (size > most) {
            throw new NbdProtocolException(OptionReplyType.name(type) + " of " + size + " bytes to "
                    + OptionType.name(option) + " (at most " + most + ")");
        }
        byte[] payload = new byte[(int) size];
        in.readFully(payload);
        length[0] = payload.length;
        ByteBuf data = Unpooled.wrappedBuffer(payload);
        checkOptionPayload(type, data);
        try {
            return OptionReplyCodec.decode(type, data);
        } catch (IndexOutOfBoundsException | IllegalArgumentException e) {
            throw new NbdProtocolException("malformed " + OptionReplyType.name(type) + " reply: " + e.getMessage());
        }
    }

    private static void checkOptionPayload(int type, ByteBuf data) throws NbdProtocolException {
        int size = data.readableBytes();
        if (type == OptionReplyType.SERVER && size >= 4) {
            long name = data.getUnsignedInt(0);
            if (name > Limits.MAX_STRING || size - 4 - name > Limits.MAX_STRING) {
                throw new NbdProtocolException("NBD_REP_SERVER with an export name of " + name + " bytes in "
                        + size + " (names and descriptions are at most " + Limits.MAX_STRING + " bytes)");
            }
        } else if (type == OptionReplyType.INFO && size >= 2) {
            int info = data.getUnsignedShort(0);
            int exact = switch (info) {
                case InfoType.EXPORT -> 2 + 8 + 2;
                case InfoType.BLOCK_SIZE -> 2 + 4 + 4 + 4;
                default -> size;
            };
            if (size != exact) {
                throw new NbdProtocolException((info == InfoType.EXPORT ? "NBD_INFO_EXPORT" : "NBD_INFO_BLOCK_SIZE")
                        + " of " + size + " bytes (it has " + exact + ")");
            }
        }
    }

    // ---------------------------------------------------------------- transmission

    /** A cookie not used by any request of this connection yet. */
    public long nextCookie() {
        return cookies.incrementAndGet();
    }

    /**
     * Sends one request exactly as given (tests use this to send what a polite client would not).
     * {@code payload} may be null; it is sent after the header as is.
     */
    public void send(RequestHeader header, byte[] payload) throws IOException {
        ensureUsable();
        replies().expect(header, payload);
        try {
            if (style == ReplyStyle.EXTENDED) {
                out.writeInt(Magic.EXTENDED_REQUEST);
                out.writeShort(header.flags());
                out.writeShort(header.type());
                out.writeLong(header.cookie());
                out.writeLong(header.offset());
                out.writeLong(header.length());
            } else {
                out.writeInt(Magic.REQUEST);
                out.writeShort(header.flags());
                out.writeShort(header.type());
                out.writeLong(header.cookie());
                out.writeLong(header.offset());
                out.writeInt((int) header.length());
            }
            if (payload != null) {
                out.write(payload);
            }
            out.flush();
        } catch (IOException e) {
            throw drop(e);
        }
    }

    /**
     * Reads until some request's reply is complete and returns it. A reply that breaks the
     * protocol (see {@link ReplyReader}) is an {@link NbdProtocolException}, and like any
     * failure to read it drops the connection: every request in flight fails with it.
     */
    public Reply receive() throws IOException {
        ensureUsable();
        try {
            // With nothing in flight this still reads: the server's hang-up after NBD_CMD_DISC is an EOFException.
            return replies().read(in);
        } catch (IOException e) {
            throw drop(e);
        }
    }

    /** Sends one request and waits for its reply; the connection must have nothing else in flight. */
    public Reply call(int type, int flags, long offset, long length, byte[] payload) throws IOException {
        RequestHeader header = new RequestHeader(flags, type, nextCookie(), offset, length);
        send(header, payload);
        Reply reply = receive();
        if (reply.cookie() != header.cookie()) {
            throw drop(new NbdProtocolException("reply for cookie " + reply.cookie() + ", expected " + header.cookie()
                    + " (another request was in flight)"));
        }
        return reply;
    }

    /** Reads {@code length} bytes, assembling data and hole chunks. */
    public byte[] read(long offset, int length) throws IOException {
        Reply reply = call(CommandType.READ, 0, offset, length, null);
        throwIfError(reply, "read");
        byte[] data = new byte[length];
        for (ReplyChunk chunk : reply.chunks()) {
            if (chunk instanceof ReplyChunk.OffsetData(long at, ByteBuf bytes)) {
                bytes.getBytes(bytes.readerIndex(), data, (int) (at - offset), bytes.readableBytes());
            }
        }
        return data;
    }

    public void write(long offset, byte[] data, int flags) throws IOException {
        int payloadFlag = style == ReplyStyle.EXTENDED ? CommandFlags.PAYLOAD_LEN : 0;
        throwIfError(call(CommandType.WRITE, flags | payloadFlag, offset, data.length, data), "write");
    }

    public void flush() throws IOException {
        throwIfError(call(CommandType.FLUSH, 0, 0, 0, null), "flush");
    }

    /** Block status for the contexts negotiated; one chunk per context. */
    public List<ReplyChunk.BlockStatus> blockStatus(long offset, long length, int flags) throws IOException {
        Reply reply = call(CommandType.BLOCK_STATUS, flags, offset, length, null);
        throwIfError(reply, "block status");
        return reply.chunks().stream().filter(ReplyChunk.BlockStatus.class::isInstance)
                .map(ReplyChunk.BlockStatus.class::cast).toList();
    }

    /** Sends NBD_CMD_DISC and closes the socket. */
    public void disconnect() throws IOException {
        try {
            send(new RequestHeader(0, CommandType.DISC, nextCookie(), 0, 0), null);
        } finally {
            close();
        }
    }

    private static void throwIfError(Reply reply, String what) throws IOException {
        for (ReplyChunk chunk : reply.chunks()) {
            if (chunk instanceof ReplyChunk.Error(NbdError error, String message)) {
                throw new NbdCommandException(what, error, message);
            }
        }
    }

    /** The reply reader for the style and contexts negotiated, made when transmission starts. */
    private ReplyReader replies() {
        if (replies == null) {
            replies = new ReplyReader(style, contexts);
        }
        return replies;
    }

    /** Fails fast on a connection dropped after a violation, rather than writing into a closed socket. */
    private void ensureUsable() throws IOException {
        if (dropped != null) {
            throw new IOException("connection to " + server() + " was dropped: " + dropped);
        }
    }

    /**
     * Closes the connection after a failure that left the stream position unknown (a protocol
     * violation, a timeout or EOF inside a message) and returns the failure to throw.
     */
    private <E extends IOException> E drop(E failure) {
        if (dropped == null) {
            dropped = failure.getMessage() == null ? failure.getClass().getSimpleName() : failure.getMessage();
            try {
                close();
            } catch (IOException e) {
                failure.addSuppressed(e);
            }
        }
        return failure;
    }

    @Override
    public void close() throws IOException {
        try {
            transport.close();
        } catch (IOException e) {
            // close_notify to a server that already hung up; the socket is closed below.
        } finally {
            socket.close();
        }
    }
}
