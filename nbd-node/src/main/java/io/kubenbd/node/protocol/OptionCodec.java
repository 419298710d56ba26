package io.kubenbd.node.protocol;

import io.netty.buffer.ByteBuf;

import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Option data in both directions: the server parses what a client sent, the client
 * encodes what it sends. Strings are UTF-8 with a length prefix or the rest of the data.
 */
public final class OptionCodec {

    private OptionCodec() {}

    /** Parses the data of one option; {@code data} holds exactly the option's payload. */
    public static OptionRequest parse(int option, ByteBuf data) {
        try {
            return switch (option) {
                case OptionType.EXPORT_NAME -> new OptionRequest.ExportName(string(data, data.readableBytes()));
                case OptionType.ABORT -> new OptionRequest.Abort();
                case OptionType.LIST -> noData(option, data, new OptionRequest.ListExports());
                case OptionType.STARTTLS -> noData(option, data, new OptionRequest.StartTls());
                case OptionType.STRUCTURED_REPLY -> noData(option, data, new OptionRequest.StructuredReply());
                case OptionType.EXTENDED_HEADERS -> noData(option, data, new OptionRequest.ExtendedHeaders());
                case OptionType.INFO, OptionType.GO -> parseInfo(option, data);
                case OptionType.LIST_META_CONTEXT, OptionType.SET_META_CONTEXT -> parseMetaContext(option, data);
                default -> new OptionRequest.Unsupported(option);
            };
        } catch (MalformedOptionException e) {
            return new OptionRequest.Malformed(option, e.getMessage());
        }
    }

    /** Writes the option data of {@code request} (without the option header). */
    public static void encode(OptionRequest request, ByteBuf out) {
        switch (request) {
            case OptionRequest.ExportName(String name) -> out.writeCharSequence(name, StandardCharsets.UTF_8);
            case OptionRequest.Info(boolean go, String name, List<Integer> requests) -> {
                writeString32(out, name);
                out.writeShort(requests.size());
                requests.forEach(out::writeShort);
            }
            case OptionRequest.MetaContext(boolean set, String exportName, List<String> queries) -> {
                writeString32(out, exportName);
                out.writeInt(queries.size());
                queries.forEach(q -> writeString32(out, q));
            }
            case OptionRequest.Abort a -> { }
            case OptionRequest.ListExports l -> { }
            case OptionRequest.StartTls s -> { }
            case OptionRequest.StructuredReply s -> { }
            case OptionRequest.ExtendedHeaders e -> { }
            case OptionRequest.Malformed m -> throw new IllegalArgumentException("cannot encode a malformed option");
            case OptionRequest.Oversized o -> throw new IllegalArgumentException("cannot encode an oversized option");
            case OptionRequest.Unsupported u -> { }
        }
    }

    private static OptionRequest noData(int option, ByteBuf data, OptionRequest parsed) throws MalformedOptionException {
        if (data.isReadable()) {
            throw new MalformedOptionException(OptionType.name(option) + " must not carry data, got "
                    + data.readableBytes() + " bytes");
        }
        return parsed;
    }

    private static OptionRequest parseInfo(int option, ByteBuf data) throws MalformedOptionException {
        String name = string32(data, "export name");
        need(data, 2, "information request count");
        int count = data.readUnsignedShort();
        if (data.readableBytes() != count * 2) {
            throw new MalformedOptionException("information request count " + count + " does not match "
                    + data.readableBytes() + " remaining bytes");
        }
        List<Integer> requests = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            requests.add(data.readUnsignedShort());
        }
        return new OptionRequest.Info(option == OptionType.GO, name, requests);
    }

    private static OptionRequest parseMetaContext(int option, ByteBuf data) throws MalformedOptionException {
        String exportName = string32(data, "export name");
        need(data, 4, "query count");
        long count = data.readUnsignedInt();
        // Each query needs at least its 4-byte length: a count beyond that is a lie, not a reason to allocate.
        if (count > data.readableBytes() / 4) {
            throw new MalformedOptionException("query count " + count + " exceeds the option length");
        }
        List<String> queries = new ArrayList<>((int) count);
        for (long i = 0; i < count; i++) {
            queries.add(string32(data, "query"));
        }
        if (data.isReadable()) {
            throw new MalformedOptionException(data.readableBytes() + " unexpected bytes after the queries");
        }
        return new OptionRequest.MetaContext(option == OptionType.SET_META_CONTEXT, exportName, queries);
    }

    private static String string32(ByteBuf data, String what) throws MalformedOptionException {
        need(data, 4, what + " length");
        long length = data.readUnsignedInt();
        if (length > data.readableBytes()) {
            throw new MalformedOptionException(what + " length " + length + " exceeds the option length");
        }
        return string(data, (int) length);
    }

    private static String string(ByteBuf data, int length) throws MalformedOptionException {
        if (length > Limits.MAX_STRING) {
            throw new MalformedOptionException("string of " + length + " bytes exceeds " + Limits.MAX_STRING);
        }
        try {
            String s = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(data.nioBuffer(data.readerIndex(), length))
                    .toString();
            data.skipBytes(length);
            return s;
        } catch (CharacterCodingException e) {
            throw new MalformedOptionException("string is not valid UTF-8");
        }
    }

    private static void need(ByteBuf data, int bytes, String what) throws MalformedOptionException {
        if (data.readableBytes() < bytes) {
            throw new MalformedOptionException("option data ends before the " + what);
        }
    }

    static void writeString32(ByteBuf out, String s) {
        int lengthIndex = out.writerIndex();
        out.writeInt(0);
        int written = out.writeCharSequence(s, StandardCharsets.UTF_8);
        out.setInt(lengthIndex, written);
    }

    private static final class MalformedOptionException extends Exception {
        MalformedOptionException(String message) {
            super(message, null, false, false);
        }
    }
}
