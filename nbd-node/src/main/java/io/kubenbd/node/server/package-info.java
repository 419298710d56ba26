/**
 * The NBD server on netty: per connection an {@link io.kubenbd.node.server.OptionHaggler}
 * runs the handshake and hands over to a {@link io.kubenbd.node.server.TransmissionHandler},
 * which validates requests, runs storage work on the I/O executor (never on an event loop)
 * and writes replies, possibly out of order. Exports, their shared backends and the meta
 * contexts they offer live in the {@link io.kubenbd.node.server.ExportRegistry}.
 */
package io.kubenbd.node.server;
