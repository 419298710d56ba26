package io.kubenbd.node.protocol;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.CorruptedFrameException;
import io.netty.handler.codec.DecoderException;

import java.util.List;
import java.util.function.BooleanSupplier;

/**
 * Server side of the handshake framing: the client flags, then option after option. Emits
 * {@link ClientFlags} once and then {@link OptionRequest}s. Option data larger than
 * {@link Limits#MAX_OPTION_DATA} is skipped as it arrives, never buffered. An option is
 * framed only while {@code mayDecode} says so (the server: while the client reads its
 * replies), so a client that never reads cannot make the server answer without limit.
 */
public final class OptionDecoder extends PausableDecoder {
    private static final int OPTION_HEADER = 16;

    private enum State { CLIENT_FLAGS, OPTION_HEADER, OPTION_DATA, SKIP_DATA, FAILED }

    private State state;
    private final BooleanSupplier mayDecode;

    /** A decoder for a new connection: client flags first, then options. */
    public OptionDecoder() {
        this(false, () -> true);
    }

    /**
     * @param optionsOnly start at the next option, as after NBD_OPT_STARTTLS when the
     *                    client flags were exchanged before TLS
     * @param mayDecode   asked before each option; false leaves it buffered until
     *                    {@link #decodeBuffered}
     */
    public OptionDecoder(boolean optionsOnly, BooleanSupplier mayDecode) {
        state = optionsOnly ? State.OPTION_HEADER : State.CLIENT_FLAGS;
        this.mayDecode = mayDecode;
    }

    /**
     * Hands over the bytes received but not decoded yet and forgets them: after STARTTLS
     * they are the start of the TLS handshake, which belongs to the TLS engine.
     */
    public ByteBuf takeBuffered() {
        ByteBuf buffered = internalBuffer();
        return buffered.readRetainedSlice(buffered.readableBytes());
    }
    private int option;
    private long remaining;

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        try {
            decodeOption(in, out);
        } catch (DecoderException e) {
            // Framing is lost: nothing after the error may become an option, not even while the channel closes.
            state = State.FAILED;
            in.skipBytes(in.readableBytes());
            throw e;
        }
    }

    private void decodeOption(ByteBuf in, List<Object> out) {
        switch (state) {
            case FAILED -> in.skipBytes(in.readableBytes());
            case CLIENT_FLAGS -> {
                if (in.readableBytes() >= 4) {
                    out.add(new ClientFlags(in.readInt()));
                    state = State.OPTION_HEADER;
                }
            }
            case OPTION_HEADER -> {
                if (in.readableBytes() < OPTION_HEADER || !mayDecode.getAsBoolean()) {
                    return;
                }
                long magic = in.readLong();
                if (magic != Magic.IHAVEOPT) {
                    throw new CorruptedFrameException("option does not start with IHAVEOPT (got 0x"
                            + Long.toHexString(magic) + ")");
                }
                option = in.readInt();
                remaining = in.readUnsignedInt();
                if (remaining > Limits.MAX_OPTION_DATA) {
                    if (option == OptionType.EXPORT_NAME) {
                        // NBD_OPT_EXPORT_NAME cannot be answered with an error: the spec says hang up.
                        throw new CorruptedFrameException("NBD_OPT_EXPORT_NAME of " + remaining + " bytes");
                    }
                    state = State.SKIP_DATA;
                    out.add(new OptionRequest.Oversized(option, remaining));
                } else {
                    state = State.OPTION_DATA;
                }
                decodeOption(in, out);
            }
            case OPTION_DATA -> {
                if (in.readableBytes() < remaining) {
                    return;
                }
                ByteBuf data = in.readSlice((int) remaining);
                state = State.OPTION_HEADER;
                out.add(OptionCodec.parse(option, data));
            }
            case SKIP_DATA -> {
                int skip = (int) Math.min(remaining, in.readableBytes());
                in.skipBytes(skip);
                remaining -= skip;
                if (remaining == 0) {
                    state = State.OPTION_HEADER;
                }
            }
        }
    }
}
