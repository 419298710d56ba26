package io.kubenbd.node.csi;

import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.stub.StreamObserver;
import io.kubenbd.node.csi.v1.NodeExpandVolumeRequest;
import io.kubenbd.node.csi.v1.NodeExpandVolumeResponse;
import io.kubenbd.node.csi.v1.NodeGetCapabilitiesRequest;
import io.kubenbd.node.csi.v1.NodeGetCapabilitiesResponse;
import io.kubenbd.node.csi.v1.NodeGetInfoRequest;
import io.kubenbd.node.csi.v1.NodeGetInfoResponse;
import io.kubenbd.node.csi.v1.NodeGetVolumeStatsRequest;
import io.kubenbd.node.csi.v1.NodeGetVolumeStatsResponse;
import io.kubenbd.node.csi.v1.NodeGrpc;
import io.kubenbd.node.csi.v1.NodePublishVolumeRequest;
import io.kubenbd.node.csi.v1.NodePublishVolumeResponse;
import io.kubenbd.node.csi.v1.NodeServiceCapability;
import io.kubenbd.node.csi.v1.NodeStageVolumeRequest;
import io.kubenbd.node.csi.v1.NodeStageVolumeResponse;
import io.kubenbd.node.csi.v1.NodeUnpublishVolumeRequest;
import io.kubenbd.node.csi.v1.NodeUnpublishVolumeResponse;
import io.kubenbd.node.csi.v1.NodeUnstageVolumeRequest;
import io.kubenbd.node.csi.v1.NodeUnstageVolumeResponse;
import io.kubenbd.node.csi.v1.VolumeCapability;
import io.kubenbd.node.csi.v1.VolumeCondition;
import io.kubenbd.node.csi.v1.VolumeUsage;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The CSI Node service. Every call validates its arguments with the status codes the spec names,
 * holds the volume's lock (a second call for the same volume meanwhile gets ABORTED, as the
 * spec asks), and is idempotent: staging a staged volume at the same path, publishing at a
 * published target, unpublishing or unstaging what is gone all succeed without doing anything.
 */
final class NodeService extends NodeGrpc.NodeImplBase {
    private static final Logger log = LoggerFactory.getLogger(NodeService.class);

    private final String nodeId;
    private final NodeState state;
    private final String fuseLibrary;
    private final boolean kernelPath;
    private final InetAddress sourceAddress;
    /** Volumes attached by this process: each has its live entry in {@link #attachments}. */
    private final Map<String, StagedVolume> staged = new ConcurrentHashMap<>();
    /**
     * Volumes the state directory records but whose re-attach after a restart failed. Their
     * recorded device and staging mount belong to no live attachment (the device may be another
     * volume's by now), so nothing is published from them; NodeStageVolume attaches them again,
     * NodeUnpublishVolume and NodeUnstageVolume clean up after them.
     */
    private final Map<String, StagedVolume> unattached = new ConcurrentHashMap<>();
    private final Map<String, Attachment> attachments = new ConcurrentHashMap<>();
    private final Map<String, ReentrantLock> locks = new ConcurrentHashMap<>();

    /** How volumes are attached; {@link #AUTO} takes the kernel's nbd driver when this node has it. */
    enum AttachMode { AUTO, KERNEL, FUSE }

    NodeService(String nodeId, NodeState state, String fuseLibrary, AttachMode mode, InetAddress sourceAddress) {
        this.nodeId = nodeId;
        this.sourceAddress = sourceAddress;
        this.state = state;
        this.fuseLibrary = fuseLibrary;
        this.kernelPath = switch (mode) {
            case KERNEL -> true;
            case FUSE -> false;
            case AUTO -> KernelAttachment.available();
        };
        log.info("node {} attaches volumes {}", nodeId, kernelPath ? "through the kernel's nbd driver" : "through FUSE and loop devices");
    }

    /** One call's work; {@link StatusException}s carry the code the spec names for the problem. */
    private interface Work<T> {
        T run() throws StatusException, IOException;
    }

    /** Runs a call that changes the volume: one at a time per volume. */
    private <T> void serve(String method, String volumeId, StreamObserver<T> observer, Work<T> work) {
        serve(method, volumeId, true, observer, work);
    }

    private <T> void serve(String method, String volumeId, boolean exclusive, StreamObserver<T> observer, Work<T> work) {
        ReentrantLock lock = volumeId.isEmpty() || !exclusive ? null : locks.computeIfAbsent(volumeId, id -> new ReentrantLock());
        if (lock != null && !lock.tryLock()) {
            observer.onError(Status.ABORTED.withDescription("an operation on volume " + volumeId + " is in progress")
                    .asException());
            return;
        }
        T result;
        try {
            result = work.run();
        } catch (StatusException e) {
            log.warn("{} volume={}: {}", method, volumeId, e.getStatus());
            unlock(lock);
            observer.onError(e);
            return;
        } catch (IOException | RuntimeException e) {
            log.error("{} volume={} failed: {}", method, volumeId, e.getMessage(), e);
            unlock(lock);
            observer.onError(Status.INTERNAL.withDescription(method + " failed: " + e.getMessage()).asException());
            return;
        }
        // Released before answering: the caller's next call for this volume may come the moment it has the answer.
        unlock(lock);
        observer.onNext(result);
        observer.onCompleted();
    }

    private static void unlock(ReentrantLock lock) {
        if (lock != null) {
            lock.unlock();
        }
    }

    private static StatusException invalid(String message) {
        return Status.INVALID_ARGUMENT.withDescription(message).asException();
    }

    private static void require(boolean condition, String message) throws StatusException {
        if (!condition) {
            throw invalid(message);
        }
    }

    /**
     * A path argument as a {@link Path}: required, absolute and spelled in its one normal form (no
     * "." or ".." segments, no repeated or trailing "/"). A relative path would resolve against
     * the plugin's working directory, and ".." could lead out of kubelet's directories; one
     * spelling per path also lets the recorded targets compare equal to mountinfo's.
     */
    private static Path absolutePath(String field, String value) throws StatusException {
        require(!value.isEmpty(), field + " is required");
        Path path = normalisedPath(value);
        require(path != null, field
                + " must be an absolute, normalised path (no relative path, '.' or '..' segments, repeated or trailing '/'), got '"
                + value + "'");
        return path;
    }

    /** {@code value} as a path when it is absolute and in its normal form, else null. */
    private static Path normalisedPath(String value) {
        try {
            Path path = Path.of(value);
            return path.isAbsolute() && path.normalize().toString().equals(value) ? path : null;
        } catch (InvalidPathException e) {
            return null;
        }
    }

    /** Re-attaches what the state directory says was staged before this process started. */
    void recover() throws IOException {
        for (StagedVolume volume : state.load()) {
            try {
                // The old mounts sit on a loop device whose file is on a FUSE mount that died with the old process.
                for (String target : volume.targets().keySet()) {
                    if (Mounter.isMountPoint(Path.of(target))) {
                        SystemCommand.run("umount", "-l", target);
                    }
                }
                if (!volume.block() && Mounter.isMountPoint(volume.stagingPath())) {
                    SystemCommand.run("umount", "-l", volume.stagingPath().toString());
                }
                UserspaceAttachment.releaseStale(volume.device(), volume.fuseDir());
                KernelAttachment.releaseStale(volume.device(), volume.volumeId());
                StagedVolume reattached = attach(volume);
                for (var target : volume.targets().entrySet()) {
                    publishAt(reattached, Path.of(target.getKey()), target.getValue());
                }
                staged.put(volume.volumeId(), reattached);
                state.save(reattached);
                log.info("volume={} re-attached after restart as {}", volume.volumeId(), reattached.device());
            } catch (IOException | StatusException | RuntimeException e) {
                log.error("volume={} could not be re-attached after restart, it waits for NodeStageVolume: {}",
                        volume.volumeId(), e.toString());
                // The old device was released above; recorded, a later restart would release it again under its next owner.
                StagedVolume detached = volume.withDevice(null);
                unattached.put(volume.volumeId(), detached);
                state.save(detached);
            }
        }
    }

    /** Connects, attaches and (for a filesystem) mounts at the staging path; used by stage and by recovery. */
    private StagedVolume attach(StagedVolume volume) throws IOException, StatusException {
        Path pskFile = state.pskFile(volume.volumeId());
        ExportDialer dialer = new ExportDialer(volume.volumeId(), volume.context(), pskFile, sourceAddress, volume.soleWriter());
        Attachment attachment = kernelPath
                ? KernelAttachment.attach(dialer, volume.readOnly())
                : UserspaceAttachment.attach(volume.volumeId(), ExportConnections.open(dialer),
                        state.fuseDir(volume.volumeId()), volume.readOnly(), fuseLibrary);
        try {
            if (!volume.block()) {
                String fsType = filesystemFor(volume, attachment.device());
                Mounter.mount(attachment.device(), volume.stagingPath(), fsType, volume.mountFlags(), volume.readOnly());
            }
        } catch (IOException | StatusException | RuntimeException e) {
            attachment.close();
            throw e;
        }
        attachments.put(volume.volumeId(), attachment);
        return volume.withDevice(attachment.device());
    }

    /**
     * The filesystem to mount from a freshly attached device: the one it holds, or a new one when
     * it is provably blank. Anything else (a VM disk's partition table, an LVM member, data blkid
     * cannot name) is refused untouched, since formatting it would destroy it.
     */
    private static String filesystemFor(StagedVolume volume, Path device) throws IOException, StatusException {
        return switch (DeviceContents.probe(device)) {
            case DeviceContents.Filesystem(String type) -> type;
            case DeviceContents.Blank() when volume.readOnly() -> throw Status.FAILED_PRECONDITION.withDescription("volume "
                    + volume.volumeId() + " is blank and staged read-only: there is no filesystem to mount").asException();
            case DeviceContents.Blank() -> {
                Mounter.format(device, volume.fsType());
                log.info("volume={} made {} on blank {}", volume.volumeId(), volume.fsType(), device);
                yield volume.fsType();
            }
            case DeviceContents.Occupied(String what) -> throw Status.FAILED_PRECONDITION
                    .withDescription("volume " + volume.volumeId() + " " + what).asException();
        };
    }

    @Override
    public void nodeStageVolume(NodeStageVolumeRequest request, StreamObserver<NodeStageVolumeResponse> observer) {
        String id = request.getVolumeId();
        serve("NodeStageVolume", id, observer, () -> {
            require(!id.isEmpty(), "volume_id is required");
            Path stagingPath = absolutePath("staging_target_path", request.getStagingTargetPath());
            require(request.hasVolumeCapability(), "volume_capability is required");
            PublishedNode.requireThisNode(request.getPublishContextMap(), nodeId, id);
            VolumeCapability capability = request.getVolumeCapability();
            StagedVolume existing = staged.get(id);
            if (existing != null) {
                if (existing.stagingPath().equals(stagingPath) && existing.block() == capability.hasBlock()) {
                    return NodeStageVolumeResponse.getDefaultInstance();
                }
                throw Status.ALREADY_EXISTS.withDescription("volume " + id + " is already staged at "
                        + existing.stagingPath() + (existing.block() ? " as a block volume" : " as a filesystem")).asException();
            }
            VolumeContext context;
            try {
                context = VolumeContext.parse(request.getVolumeContextMap());
            } catch (IllegalArgumentException e) {
                throw invalid(e.getMessage());
            }
            if (context.tlsMode() == VolumeContext.TlsMode.PSK) {
                String keys = request.getSecretsMap().get("keys.psk");
                require(keys != null && !keys.isBlank(),
                        "tlsMode psk needs the export's PSK Secret (keys.psk) through nodeStageSecretRef");
                state.writePsk(id, keys);
            }
            boolean block = capability.hasBlock();
            String fsType = capability.hasMount() && !capability.getMount().getFsType().isEmpty()
                    ? capability.getMount().getFsType() : "ext4";
            require(block || List.of("ext4", "xfs").contains(fsType), "fs_type must be ext4 or xfs, got '" + fsType + "'");
            StagedVolume volume = new StagedVolume(id, stagingPath, context, block, fsType,
                    block ? List.of() : capability.getMount().getMountFlagsList(), readOnly(capability),
                    state.fuseDir(id), null, Map.of(), soleWriter(capability));
            StagedVolume attached;
            try {
                attached = attach(volume);
            } catch (IOException | StatusException e) {
                if (!unattached.containsKey(id)) {
                    // A volume waiting for re-attach keeps its record: unpublish and unstage still need it.
                    state.remove(id);
                }
                throw switch (e) {
                    case StatusException status -> status;
                    case ExportDialer.ClaimRefusedException refused ->
                            Status.FAILED_PRECONDITION.withDescription(refused.getMessage()).asException();
                    default -> Status.UNAVAILABLE.withDescription("cannot attach " + context + ": " + e.getMessage())
                            .asException();
                };
            }
            staged.put(id, attached);
            state.save(attached);
            log.info("volume={} staged at {} from {}{}", id, stagingPath, context,
                    unattached.remove(id) != null ? " (attached again after the plugin restarted)" : "");
            return NodeStageVolumeResponse.getDefaultInstance();
        });
    }

    /**
     * Whether a stage takes the volume read-write for this node alone: every read-write
     * filesystem (ext4 and xfs cannot be mounted by two nodes), and every read-write block
     * volume except a multi-node multi-writer one (a VM's live migration opens it on two nodes).
     */
    private static boolean soleWriter(VolumeCapability capability) {
        return !readOnly(capability) && (capability.hasMount()
                || capability.getAccessMode().getMode() != VolumeCapability.AccessMode.Mode.MULTI_NODE_MULTI_WRITER);
    }

    private static boolean readOnly(VolumeCapability capability) {
        var mode = capability.getAccessMode().getMode();
        return mode == VolumeCapability.AccessMode.Mode.SINGLE_NODE_READER_ONLY
                || mode == VolumeCapability.AccessMode.Mode.MULTI_NODE_READER_ONLY;
    }

    @Override
    public void nodeUnstageVolume(NodeUnstageVolumeRequest request, StreamObserver<NodeUnstageVolumeResponse> observer) {
        String id = request.getVolumeId();
        serve("NodeUnstageVolume", id, observer, () -> {
            require(!id.isEmpty(), "volume_id is required");
            absolutePath("staging_target_path", request.getStagingTargetPath());
            StagedVolume volume = recorded(id);
            if (volume == null) {
                return NodeUnstageVolumeResponse.getDefaultInstance();
            }
            List<String> published = new ArrayList<>();
            for (String target : volume.targets().keySet()) {
                if (Mounter.isMountPoint(Path.of(target))) {
                    published.add(target);
                }
            }
            if (!published.isEmpty()) {
                published.sort(null);
                throw Status.FAILED_PRECONDITION.withDescription("volume " + id + " is still published at " + published
                        + "; NodeUnpublishVolume each target first").asException();
            }
            if (!volume.block() && Mounter.isMountPoint(volume.stagingPath())) {
                Mounter.unmount(volume.stagingPath());
            }
            Attachment attachment = attachments.remove(id);
            if (attachment != null) {
                attachment.close();
            }
            staged.remove(id);
            unattached.remove(id);
            state.remove(id);
            log.info("volume={} unstaged from {}", id, volume.stagingPath());
            return NodeUnstageVolumeResponse.getDefaultInstance();
        });
    }

    @Override
    public void nodePublishVolume(NodePublishVolumeRequest request, StreamObserver<NodePublishVolumeResponse> observer) {
        String id = request.getVolumeId();
        serve("NodePublishVolume", id, observer, () -> {
            require(!id.isEmpty(), "volume_id is required");
            Path target = absolutePath("target_path", request.getTargetPath());
            Path stagingPath = absolutePath("staging_target_path (STAGE_UNSTAGE_VOLUME)", request.getStagingTargetPath());
            require(request.hasVolumeCapability(), "volume_capability is required");
            StagedVolume volume = recorded(id);
            if (volume == null) {
                throw Status.NOT_FOUND.withDescription("volume " + id + " is not staged on node " + nodeId).asException();
            }
            require(volume.stagingPath().equals(stagingPath), "volume " + id + " is staged at " + volume.stagingPath()
                    + ", not at " + stagingPath);
            if (volume.block() != request.getVolumeCapability().hasBlock()) {
                throw invalid("volume " + id + " is staged as a " + (volume.block() ? "block volume" : "filesystem")
                        + " and cannot be published as the other");
            }
            liveAttachment(volume);
            Boolean publishedReadOnly = volume.targets().get(target.toString());
            boolean readOnly = request.getReadonly() || volume.readOnly();
            if (publishedReadOnly != null && Mounter.isMountPoint(target)) {
                if (publishedReadOnly != readOnly) {
                    throw Status.ALREADY_EXISTS.withDescription("volume " + id + " is published at " + target
                            + (publishedReadOnly ? " read-only" : " read-write")).asException();
                }
                return NodePublishVolumeResponse.getDefaultInstance();
            }
            publishAt(volume, target, readOnly);
            Map<String, Boolean> targets = new HashMap<>(volume.targets());
            targets.put(target.toString(), readOnly);
            update(volume.withTargets(targets));
            log.info("volume={} published at {}{}", id, target, readOnly ? " read-only" : "");
            return NodePublishVolumeResponse.getDefaultInstance();
        });
    }

    /** The volume's record, whether attached or waiting for re-attach; null when this node has none. */
    private StagedVolume recorded(String volumeId) {
        StagedVolume volume = staged.get(volumeId);
        return volume != null ? volume : unattached.get(volumeId);
    }

    /** Replaces the volume's record where it is kept, in memory and in the state directory. */
    private void update(StagedVolume volume) throws IOException {
        (unattached.containsKey(volume.volumeId()) ? unattached : staged).put(volume.volumeId(), volume);
        state.save(volume);
    }

    /**
     * The attachment that owns the volume's recorded device now, with (for a filesystem) the
     * staging path mounted from that device; else FAILED_PRECONDITION. What is bound into a pod
     * must be this volume's data: a device number or an empty staging directory left from an
     * earlier run may be another volume's, or the node's own disk.
     */
    private Attachment liveAttachment(StagedVolume volume) throws StatusException, IOException {
        Attachment attachment = attachments.get(volume.volumeId());
        if (attachment == null) {
            throw Status.FAILED_PRECONDITION.withDescription("volume " + volume.volumeId() + " is not attached on this node:"
                    + " re-attaching it after the plugin restarted failed; NodeStageVolume attaches it again").asException();
        }
        if (!attachment.device().equals(volume.device())) {
            throw Status.FAILED_PRECONDITION.withDescription("volume " + volume.volumeId() + " is recorded on " + volume.device()
                    + " but attached as " + attachment.device() + "; NodeUnstageVolume and NodeStageVolume it again").asException();
        }
        if (!volume.block()) {
            String source = Mounter.sourceOf(volume.stagingPath());
            if (!attachment.device().toString().equals(source)) {
                throw Status.FAILED_PRECONDITION.withDescription("volume " + volume.volumeId() + ": " + volume.stagingPath()
                        + " is " + (source == null ? "not mounted" : "mounted from " + source) + ", not from its device "
                        + attachment.device() + "; NodeUnstageVolume and NodeStageVolume it again").asException();
            }
        }
        return attachment;
    }

    private static void publishAt(StagedVolume volume, Path target, boolean readOnly) throws IOException {
        if (volume.block()) {
            Files.createDirectories(target.getParent());
            if (!Files.exists(target)) {
                Files.createFile(target);
            }
            Mounter.bind(volume.device(), target, readOnly);
        } else {
            Files.createDirectories(target);
            Mounter.bind(volume.stagingPath(), target, readOnly);
        }
    }

    @Override
    public void nodeUnpublishVolume(NodeUnpublishVolumeRequest request, StreamObserver<NodeUnpublishVolumeResponse> observer) {
        String id = request.getVolumeId();
        serve("NodeUnpublishVolume", id, observer, () -> {
            require(!id.isEmpty(), "volume_id is required");
            Path target = absolutePath("target_path", request.getTargetPath());
            StagedVolume volume = recorded(id);
            if (volume == null && !Mounter.isMountPoint(target)) {
                if (Files.exists(target)) {
                    Files.delete(target);
                    return NodeUnpublishVolumeResponse.getDefaultInstance();
                }
                throw Status.NOT_FOUND.withDescription("volume " + id + " is not staged on node " + nodeId).asException();
            }
            if (Mounter.isMountPoint(target)) {
                Mounter.unmount(target);
            }
            Files.deleteIfExists(target);
            if (volume != null && volume.targets().containsKey(target.toString())) {
                Map<String, Boolean> targets = new HashMap<>(volume.targets());
                targets.remove(target.toString());
                update(volume.withTargets(targets));
            }
            log.info("volume={} unpublished from {}", id, target);
            return NodeUnpublishVolumeResponse.getDefaultInstance();
        });
    }

    @Override
    public void nodeGetVolumeStats(NodeGetVolumeStatsRequest request, StreamObserver<NodeGetVolumeStatsResponse> observer) {
        String id = request.getVolumeId();
        serve("NodeGetVolumeStats", id, false, observer, () -> {
            require(!id.isEmpty(), "volume_id is required");
            require(!request.getVolumePath().isEmpty(), "volume_path is required");
            if (!request.getStagingTargetPath().isEmpty()) {
                absolutePath("staging_target_path", request.getStagingTargetPath());
            }
            StagedVolume volume = recorded(id);
            // The spec (and csi-sanity, with "some/path") wants NOT_FOUND for a path the volume is not at;
            // one that is not absolute and normalised cannot be any volume's.
            Path path = normalisedPath(request.getVolumePath());
            if (volume == null || path == null || !Files.exists(path)
                    || !(path.equals(volume.stagingPath()) || volume.targets().containsKey(path.toString()))) {
                throw Status.NOT_FOUND.withDescription("volume " + id + " is not at '" + request.getVolumePath() + "' on node "
                        + nodeId + " (volume paths are absolute and normalised)").asException();
            }
            Attachment attachment = attachments.get(id);
            var response = NodeGetVolumeStatsResponse.newBuilder();
            // Not attached, the path is a bare directory whose numbers would be the node's disk's: no usage then.
            if (attachment != null && volume.block()) {
                response.addUsage(VolumeUsage.newBuilder().setUnit(VolumeUsage.Unit.BYTES).setTotal(attachment.size()));
            } else if (attachment != null) {
                String[] df = SystemCommand.check("stat", "-f", "-c", "%S %b %f %a %c %d", path.toString()).split(" ");
                long blockSize = Long.parseLong(df[0]);
                long total = Long.parseLong(df[1]) * blockSize;
                long available = Long.parseLong(df[3]) * blockSize;
                long inodes = Long.parseLong(df[4]);
                long freeInodes = Long.parseLong(df[5]);
                response.addUsage(VolumeUsage.newBuilder().setUnit(VolumeUsage.Unit.BYTES)
                        .setTotal(total).setAvailable(available).setUsed(total - Long.parseLong(df[2]) * blockSize));
                response.addUsage(VolumeUsage.newBuilder().setUnit(VolumeUsage.Unit.INODES)
                        .setTotal(inodes).setAvailable(freeInodes).setUsed(inodes - freeInodes));
            }
            response.setVolumeCondition(condition(volume, attachment));
            return response.build();
        });
    }

    private static VolumeCondition condition(StagedVolume volume, Attachment attachment) {
        if (attachment == null) {
            return VolumeCondition.newBuilder().setAbnormal(true)
                    .setMessage("not attached: re-attaching after the plugin restarted failed; the next NodeStageVolume"
                            + " (a new pod using the volume) attaches it again").build();
        }
        String failure = attachment.failure();
        return failure == null
                ? VolumeCondition.newBuilder().setAbnormal(false).setMessage("attached as " + volume.device()
                + " from " + volume.context()).build()
                : VolumeCondition.newBuilder().setAbnormal(true).setMessage(failure).build();
    }

    @Override
    public void nodeExpandVolume(NodeExpandVolumeRequest request, StreamObserver<NodeExpandVolumeResponse> observer) {
        String id = request.getVolumeId();
        serve("NodeExpandVolume", id, observer, () -> {
            require(!id.isEmpty(), "volume_id is required");
            require(!request.getVolumePath().isEmpty(), "volume_path is required");
            StagedVolume volume = recorded(id);
            if (volume == null) {
                // Before the paths' form: csi-sanity asks about an unknown volume at "some/path" and wants NOT_FOUND.
                throw Status.NOT_FOUND.withDescription("volume " + id + " is not staged on node " + nodeId).asException();
            }
            absolutePath("volume_path", request.getVolumePath());
            if (!request.getStagingTargetPath().isEmpty()) {
                absolutePath("staging_target_path", request.getStagingTargetPath());
            }
            long size = liveAttachment(volume).expand();
            if (!volume.block()) {
                if (!(DeviceContents.probe(volume.device()) instanceof DeviceContents.Filesystem(String type))) {
                    throw Status.FAILED_PRECONDITION.withDescription("volume " + id + " has no filesystem on "
                            + volume.device() + " to grow").asException();
                }
                Mounter.growFilesystem(volume.device(), volume.stagingPath(), type);
            }
            log.info("volume={} expanded to {} bytes", id, size);
            return NodeExpandVolumeResponse.newBuilder().setCapacityBytes(size).build();
        });
    }

    @Override
    public void nodeGetCapabilities(NodeGetCapabilitiesRequest request, StreamObserver<NodeGetCapabilitiesResponse> observer) {
        var response = NodeGetCapabilitiesResponse.newBuilder();
        for (var type : List.of(NodeServiceCapability.RPC.Type.STAGE_UNSTAGE_VOLUME, NodeServiceCapability.RPC.Type.GET_VOLUME_STATS,
                NodeServiceCapability.RPC.Type.VOLUME_CONDITION, NodeServiceCapability.RPC.Type.EXPAND_VOLUME)) {
            response.addCapabilities(NodeServiceCapability.newBuilder().setRpc(NodeServiceCapability.RPC.newBuilder().setType(type)));
        }
        observer.onNext(response.build());
        observer.onCompleted();
    }

    @Override
    public void nodeGetInfo(NodeGetInfoRequest request, StreamObserver<NodeGetInfoResponse> observer) {
        observer.onNext(NodeGetInfoResponse.newBuilder().setNodeId(nodeId).build());
        observer.onCompleted();
    }
}
