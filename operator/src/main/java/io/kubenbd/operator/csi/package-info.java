/**
 * The CSI Controller and Identity services of the driver {@code nbd.csi.kubenbd.io}, served by
 * the operator on a unix socket for the external-attacher sidecar in the same pod. Their one job
 * is single-node read-write: ControllerPublishVolume refuses a single-node volume to a node while
 * another node holds it (a VolumeAttachment that is attached, or that this controller has just
 * granted), so that Kubernetes' attach/detach controller and kubelet never let two nodes mount
 * one filesystem. Volumes are NbdExports; their PersistentVolumes carry the volume handle
 * {@code <namespace>/<name>}.
 */
package io.kubenbd.operator.csi;
