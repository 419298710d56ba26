/**
 * The CSI node plugin ({@code nbd-node csi}): the Identity and Node gRPC services of the CSI
 * spec on a unix socket, which attach an NBD export on the node that consumes it. On nodes
 * without the kernel's nbd driver the export becomes a file through FUSE
 * ({@link io.kubenbd.node.csi.ExportFileSystem}, served by a pool of the project's NBD client
 * connections that reconnect when the server restarts) and a block device through a loop
 * device; the {@link io.kubenbd.node.csi.Mounter} makes a filesystem on a blank device, mounts
 * it at the staging path and bind-mounts it to each target. What is attached is recorded in the
 * state directory ({@link io.kubenbd.node.csi.NodeState}) so that every call is idempotent and a
 * restarted plugin re-establishes its attachments.
 */
package io.kubenbd.node.csi;
