/**
 * Where nbd-node serves gRPC: the control API of {@code serve} and the CSI services of
 * {@code csi}, on a unix socket or a TCP address (mutual TLS only), with one way of starting
 * and of stopping.
 */
package io.kubenbd.node.grpc;
