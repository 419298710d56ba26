/**
 * A blocking NBD client: fixed newstyle negotiation (structured replies, extended headers,
 * meta contexts, INFO/GO) and transmission with many requests in flight. Used by
 * {@code nbd-node list}, the interoperability tests and, later, the CSI node plugin.
 */
package io.kubenbd.node.client;
