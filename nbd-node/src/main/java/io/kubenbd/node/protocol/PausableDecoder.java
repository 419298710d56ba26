package io.kubenbd.node.protocol;

import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;

/**
 * A decoder its consumer can hold back. {@link ByteToMessageDecoder} alone keeps framing
 * bytes it has already buffered after reading pauses (one large TCP read can hold thousands
 * of requests), and reads more on its own when a read framed nothing; a subclass instead asks
 * before each message whether it may frame it, and stops with the message unread when not.
 * The consumer calls {@link #decodeBuffered} when it can take messages again.
 */
public abstract class PausableDecoder extends ByteToMessageDecoder {

    @Override
    public void channelReadComplete(ChannelHandlerContext ctx) throws Exception {
        if (ctx.channel().config().isAutoRead()) {
            super.channelReadComplete(ctx);
            return;
        }
        // Reading is off because the consumer is full: do not read more just because this read
        // framed no message, as the base class would, or a held-back connection keeps buffering.
        discardSomeReadBytes();
        ctx.fireChannelReadComplete();
    }

    /**
     * Frames what is already buffered, as if it had just arrived. Call on the event loop, from
     * a task of its own (never from inside this decoder's own output), with this decoder's context.
     */
    public void decodeBuffered(ChannelHandlerContext ctx) throws Exception {
        if (actualReadableBytes() > 0) {
            channelRead(ctx, Unpooled.EMPTY_BUFFER);
        }
    }
}
