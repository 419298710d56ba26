/**
 * The NBD wire format, as pure data and codecs: constants, the option and transmission
 * message records (sealed families), and the netty decoders and encoders that turn bytes
 * into those records and back. Nothing here opens sockets, touches storage or keeps
 * connection state beyond the framing a decoder needs.
 */
package io.kubenbd.node.protocol;
