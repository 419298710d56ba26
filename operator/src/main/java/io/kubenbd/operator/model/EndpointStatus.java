package io.kubenbd.operator.model;

/**
 * How clients reach the export: the URI ({@code nbds://} with TLS, {@code nbd://} without), the
 * Secret with the PSK or certificate, and the PSK identity (not secret: the user part of the URI).
 */
public record EndpointStatus(String uri, String pskSecret, String pskIdentity) {
}
