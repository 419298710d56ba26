package io.kubenbd.operator.csi;

import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.stub.StreamObserver;
import io.kubenbd.node.csi.v1.ControllerGetCapabilitiesRequest;
import io.kubenbd.node.csi.v1.ControllerGetCapabilitiesResponse;
import io.kubenbd.node.csi.v1.ControllerGrpc;
import io.kubenbd.node.csi.v1.ControllerPublishVolumeRequest;
import io.kubenbd.node.csi.v1.ControllerPublishVolumeResponse;
import io.kubenbd.node.csi.v1.ControllerServiceCapability;
import io.kubenbd.node.csi.v1.ControllerUnpublishVolumeRequest;
import io.kubenbd.node.csi.v1.ControllerUnpublishVolumeResponse;
import io.kubenbd.node.csi.v1.ValidateVolumeCapabilitiesRequest;
import io.kubenbd.node.csi.v1.ValidateVolumeCapabilitiesResponse;
import io.kubenbd.node.csi.v1.VolumeCapability;
import io.kubenbd.operator.csi.ClusterAttachments.NodeAttachment;
import io.kubenbd.operator.model.NbdExport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The CSI Controller service: ControllerPublishVolume decides which node may have a volume.
 *
 * <p>A volume with a single-node access mode (ReadWriteOnce and ReadWriteOncePod give
 * SINGLE_NODE_WRITER, SINGLE_NODE_SINGLE_WRITER or SINGLE_NODE_MULTI_WRITER) is refused to a node
 * with FAILED_PRECONDITION while another node holds it; so is any volume while another node holds
 * it through a read-write single-node PersistentVolume. A node holds a volume when Kubernetes
 * records a VolumeAttachment of this driver for it on that node that is either attached (until the
 * external-attacher has seen ControllerUnpublishVolume succeed, even while it is being deleted:
 * the node may still have the filesystem mounted) or, not being deleted, was granted by this
 * controller and not yet recorded as attached (the attacher writes status.attached only after the
 * answer, and it works on several VolumeAttachments at once; counting every pending one instead
 * would let two pending attachments refuse each other forever).
 *
 * <p>Calls for one volume run one after the other, so two nodes asking at once cannot both be
 * granted. The attacher retries a refused attachment with exponential back-off, so the second node
 * gets the volume once the first has detached it. The node plugin checks the grant again before it
 * attaches anything (publish_context {@value #NODE_KEY}).
 */
final class CsiControllerService extends ControllerGrpc.ControllerImplBase {
    private static final Logger log = LoggerFactory.getLogger(CsiControllerService.class);

    /** The publish_context key naming the node the volume was published to; the node plugin checks it. */
    static final String NODE_KEY = "kubenbd.io/node";

    private record Grant(String volumeId, String nodeId) {
    }

    private final KubernetesClient client;
    private final ClusterAttachments attachments;
    private final Map<String, Object> volumeLocks = new ConcurrentHashMap<>();
    private final Set<Grant> grants = ConcurrentHashMap.newKeySet();

    CsiControllerService(KubernetesClient client) {
        this.client = client;
        this.attachments = new ClusterAttachments(client);
    }

    @Override
    public void controllerGetCapabilities(ControllerGetCapabilitiesRequest request,
                                          StreamObserver<ControllerGetCapabilitiesResponse> observer) {
        observer.onNext(ControllerGetCapabilitiesResponse.newBuilder().addCapabilities(ControllerServiceCapability.newBuilder()
                .setRpc(ControllerServiceCapability.RPC.newBuilder()
                        .setType(ControllerServiceCapability.RPC.Type.PUBLISH_UNPUBLISH_VOLUME))).build());
        observer.onCompleted();
    }

    @Override
    public void controllerPublishVolume(ControllerPublishVolumeRequest request,
                                        StreamObserver<ControllerPublishVolumeResponse> observer) {
        answer(observer, "ControllerPublishVolume", request.getVolumeId(), request.getNodeId(), () -> {
            PublishArguments arguments = PublishArguments.of(request);
            synchronized (lockOf(arguments.volumeId())) {
                return publish(arguments);
            }
        });
    }

    private ControllerPublishVolumeResponse publish(PublishArguments arguments) throws StatusException {
        String volumeId = arguments.volumeId();
        String nodeId = arguments.nodeId();
        requireExport(volumeId);
        if (client.nodes().withName(nodeId).get() == null) {
            throw Status.NOT_FOUND.withDescription("node " + nodeId + " does not exist (the node id of this driver is the "
                    + "Kubernetes node name)").asException();
        }
        for (NodeAttachment other : attachments.of(volumeId)) {
            if (other.node().equals(nodeId) || !holds(volumeId, other)) {
                continue;
            }
            if (arguments.singleNode() || other.readWrite()) {
                throw Status.FAILED_PRECONDITION.withDescription("volume " + volumeId + " is attached "
                        + (other.readWrite() ? "read-write " : "") + "to node " + other.node() + " (VolumeAttachment "
                        + other.name() + ", PersistentVolume " + other.persistentVolume() + "); a single-node volume is "
                        + "attached to one node at a time, so node " + nodeId + " gets it once node " + other.node()
                        + " has detached it, after the pods using it there have stopped").asException();
            }
        }
        grants.add(new Grant(volumeId, nodeId));
        log.info("ControllerPublishVolume volume={} node={}: published ({})", volumeId, nodeId, arguments.mode());
        return ControllerPublishVolumeResponse.newBuilder().putPublishContext(NODE_KEY, nodeId).build();
    }

    /** Whether another node's attachment keeps the volume; see the class comment. */
    private boolean holds(String volumeId, NodeAttachment attachment) {
        return attachment.attached() || !attachment.deleting() && grants.contains(new Grant(volumeId, attachment.node()));
    }

    @Override
    public void controllerUnpublishVolume(ControllerUnpublishVolumeRequest request,
                                          StreamObserver<ControllerUnpublishVolumeResponse> observer) {
        answer(observer, "ControllerUnpublishVolume", request.getVolumeId(), request.getNodeId(), () -> {
            PublishArguments.require(!request.getVolumeId().isEmpty(), "volume_id is required");
            synchronized (lockOf(request.getVolumeId())) {
                // Nothing on the server side is tied to a node: releasing the grant is all there is. An empty node_id
                // means every node, as the spec asks. Unpublishing what is not published is fine (idempotent).
                boolean released = grants.removeIf(grant -> grant.volumeId().equals(request.getVolumeId())
                        && (request.getNodeId().isEmpty() || grant.nodeId().equals(request.getNodeId())));
                log.info("ControllerUnpublishVolume volume={} node={}: {}", request.getVolumeId(),
                        request.getNodeId().isEmpty() ? "(all)" : request.getNodeId(),
                        released ? "unpublished" : "was not published by this controller instance");
                return ControllerUnpublishVolumeResponse.getDefaultInstance();
            }
        });
    }

    @Override
    public void validateVolumeCapabilities(ValidateVolumeCapabilitiesRequest request,
                                           StreamObserver<ValidateVolumeCapabilitiesResponse> observer) {
        answer(observer, "ValidateVolumeCapabilities", request.getVolumeId(), "", () -> {
            PublishArguments.require(!request.getVolumeId().isEmpty(), "volume_id is required");
            PublishArguments.require(request.getVolumeCapabilitiesCount() > 0, "volume_capabilities is required");
            NbdExport export = requireExport(request.getVolumeId());
            for (VolumeCapability capability : request.getVolumeCapabilitiesList()) {
                Optional<String> unsupported = PublishArguments.unsupported(capability);
                if (unsupported.isEmpty() && export.getSpec().readOnlyOrDefault() && writes(capability)) {
                    unsupported = Optional.of("NbdExport " + request.getVolumeId() + " is read-only (spec.readOnly), "
                            + "but access mode " + capability.getAccessMode().getMode() + " writes");
                }
                if (unsupported.isPresent()) {
                    return ValidateVolumeCapabilitiesResponse.newBuilder().setMessage(unsupported.get()).build();
                }
            }
            return ValidateVolumeCapabilitiesResponse.newBuilder().setConfirmed(ValidateVolumeCapabilitiesResponse.Confirmed
                    .newBuilder().putAllVolumeContext(request.getVolumeContextMap())
                    .addAllVolumeCapabilities(request.getVolumeCapabilitiesList())).build();
        });
    }

    private static boolean writes(VolumeCapability capability) {
        return switch (capability.getAccessMode().getMode()) {
            case SINGLE_NODE_READER_ONLY, MULTI_NODE_READER_ONLY -> false;
            default -> true;
        };
    }

    /** The NbdExport a volume id names; NOT_FOUND when there is none. */
    private NbdExport requireExport(String volumeId) throws StatusException {
        VolumeHandle handle = VolumeHandle.parse(volumeId).orElseThrow(() -> Status.NOT_FOUND.withDescription("volume "
                + volumeId + " does not exist: volume handles of this driver are <namespace>/<name> of an NbdExport")
                .asException());
        NbdExport export = client.resources(NbdExport.class).inNamespace(handle.namespace()).withName(handle.name()).get();
        if (export == null) {
            throw Status.NOT_FOUND.withDescription("volume " + volumeId + " does not exist: there is no NbdExport "
                    + handle.name() + " in namespace " + handle.namespace()).asException();
        }
        return export;
    }

    private Object lockOf(String volumeId) {
        return volumeLocks.computeIfAbsent(volumeId, id -> new Object());
    }

    @FunctionalInterface
    private interface Call<T> {
        T run() throws StatusException;
    }

    /** Runs a call and answers it; a refusal is logged once with the volume and node, as is a Kubernetes API failure. */
    private static <T> void answer(StreamObserver<T> observer, String method, String volumeId, String nodeId, Call<T> call) {
        T result;
        try {
            result = call.run();
        } catch (StatusException e) {
            log.warn("{} volume={} node={}: {} {}", method, volumeId, nodeId, e.getStatus().getCode(),
                    e.getStatus().getDescription());
            observer.onError(e);
            return;
        } catch (KubernetesClientException e) {
            log.error("{} volume={} node={}: the Kubernetes API failed: {}", method, volumeId, nodeId, e.getMessage());
            observer.onError(Status.UNAVAILABLE.withDescription(method + " for volume " + volumeId
                    + " cannot read the cluster's state: " + e.getMessage()).asException());
            return;
        }
        observer.onNext(result);
        observer.onCompleted();
    }
}
