/**
 * The NBD server on netty: per connection an {@link io.kubenbd.node.server.OptionHaggler}
 * runs the handshake (and STARTTLS, putting a Bouncy Castle PSK engine or a JDK SslHandler in
 * front of it) and hands over to a {@link io.kubenbd.node.server.TransmissionHandler}, which
 * validates requests, runs storage work on the I/O executor (never on an event loop) and
 * writes replies, possibly out of order. Exports, their shared backends, dirty bitmaps and
 * meta contexts live in the {@link io.kubenbd.node.server.ExportRegistry}; the gRPC control
 * API ({@link io.kubenbd.node.server.ControlServer}) reads and manages them on its own address.
 */
package io.kubenbd.node.server;
