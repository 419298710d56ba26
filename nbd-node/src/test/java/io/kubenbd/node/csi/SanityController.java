package io.kubenbd.node.csi;

import io.grpc.BindableService;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import io.kubenbd.node.csi.v1.ControllerGetCapabilitiesRequest;
import io.kubenbd.node.csi.v1.ControllerGetCapabilitiesResponse;
import io.kubenbd.node.csi.v1.ControllerGrpc;
import io.kubenbd.node.csi.v1.ControllerServiceCapability;
import io.kubenbd.node.csi.v1.CreateVolumeRequest;
import io.kubenbd.node.csi.v1.CreateVolumeResponse;
import io.kubenbd.node.csi.v1.DeleteVolumeRequest;
import io.kubenbd.node.csi.v1.DeleteVolumeResponse;
import io.kubenbd.node.csi.v1.GetPluginCapabilitiesRequest;
import io.kubenbd.node.csi.v1.GetPluginCapabilitiesResponse;
import io.kubenbd.node.csi.v1.GetPluginInfoRequest;
import io.kubenbd.node.csi.v1.GetPluginInfoResponse;
import io.kubenbd.node.csi.v1.IdentityGrpc;
import io.kubenbd.node.csi.v1.ProbeRequest;
import io.kubenbd.node.csi.v1.ProbeResponse;
import io.kubenbd.node.csi.v1.PluginCapability;
import io.kubenbd.node.csi.v1.Volume;
import io.kubenbd.node.grpc.GrpcEndpoint;
import io.kubenbd.node.testing.ServerProcess;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The controller side csi-sanity needs to get volumes, played by the test (kube-nbd provisions
 * nothing: in a cluster the operator serves a PVC and writes the PersistentVolume, and its
 * controller service only publishes volumes to nodes).
 * CreateVolume makes a sparse image and starts a real {@code nbd-node serve} with TLS-PSK for
 * it; the volume context is exactly what the operator writes into a PersistentVolume.
 */
final class SanityController extends ControllerGrpc.ControllerImplBase implements AutoCloseable {
    private static final long DEFAULT_SIZE = 64L << 20;

    private record Created(Volume volume, ServerProcess server, Path image) {
    }

    private final Path directory;
    private final Path pskFile;
    private final Map<String, Created> volumes = new ConcurrentHashMap<>();
    private GrpcEndpoint endpoint;

    SanityController(Path directory, Path pskFile) {
        this.directory = directory;
        this.pskFile = pskFile;
    }

    /** Serves this controller, an Identity service, and whatever else is given, on one socket. */
    void serve(Path socket, IdentityGrpc.IdentityImplBase identity, BindableService... more) throws IOException {
        BindableService[] services = new BindableService[more.length + 2];
        services[0] = this;
        services[1] = identity;
        System.arraycopy(more, 0, services, 2, more.length);
        endpoint = GrpcEndpoint.unix(socket, services);
    }

    /**
     * The Identity of a driver whose endpoint serves a controller too: csi-sanity runs its volume
     * lifecycle specs only against such an endpoint.
     */
    static final class IdentityWithController extends IdentityGrpc.IdentityImplBase {
        private final IdentityService plugin = new IdentityService();

        @Override
        public void getPluginInfo(GetPluginInfoRequest request, StreamObserver<GetPluginInfoResponse> observer) {
            plugin.getPluginInfo(request, observer);
        }

        @Override
        public void probe(ProbeRequest request, StreamObserver<ProbeResponse> observer) {
            plugin.probe(request, observer);
        }

        @Override
        public void getPluginCapabilities(GetPluginCapabilitiesRequest request,
                                          StreamObserver<GetPluginCapabilitiesResponse> observer) {
            observer.onNext(GetPluginCapabilitiesResponse.newBuilder().addCapabilities(PluginCapability.newBuilder()
                    .setService(PluginCapability.Service.newBuilder().setType(PluginCapability.Service.Type.CONTROLLER_SERVICE)))
                    .build());
            observer.onCompleted();
        }
    }

    @Override
    public void controllerGetCapabilities(ControllerGetCapabilitiesRequest request,
                                          StreamObserver<ControllerGetCapabilitiesResponse> observer) {
        observer.onNext(ControllerGetCapabilitiesResponse.newBuilder().addCapabilities(ControllerServiceCapability.newBuilder()
                .setRpc(ControllerServiceCapability.RPC.newBuilder()
                        .setType(ControllerServiceCapability.RPC.Type.CREATE_DELETE_VOLUME))).build());
        observer.onCompleted();
    }

    @Override
    public synchronized void createVolume(CreateVolumeRequest request, StreamObserver<CreateVolumeResponse> observer) {
        if (request.getName().isEmpty() || request.getVolumeCapabilitiesCount() == 0) {
            observer.onError(Status.INVALID_ARGUMENT.withDescription("name and volume_capabilities are required").asException());
            return;
        }
        long size = request.getCapacityRange().getRequiredBytes() > 0 ? request.getCapacityRange().getRequiredBytes() : DEFAULT_SIZE;
        Created existing = volumes.get(request.getName());
        if (existing != null) {
            if (existing.volume().getCapacityBytes() != size) {
                observer.onError(Status.ALREADY_EXISTS.withDescription("volume " + request.getName() + " exists with another size")
                        .asException());
                return;
            }
            observer.onNext(CreateVolumeResponse.newBuilder().setVolume(existing.volume()).build());
            observer.onCompleted();
            return;
        }
        try {
            String id = "vol-" + volumes.size() + "-" + Integer.toHexString(request.getName().hashCode());
            Path image = directory.resolve(id + ".img");
            try (RandomAccessFile file = new RandomAccessFile(image.toFile(), "rw")) {
                file.setLength(size);
            }
            ServerProcess nbd = ServerProcess.nbdNode("--export", id + "=" + image, "--tls", "require",
                    "--tls-psk", pskFile.toString());
            Volume volume = Volume.newBuilder().setVolumeId(id).setCapacityBytes(size)
                    .putAllVolumeContext(Map.of("host", "127.0.0.1", "port", Integer.toString(nbd.port()),
                            "exportName", id, "connections", "2", "tlsMode", "psk"))
                    .build();
            volumes.put(request.getName(), new Created(volume, nbd, image));
            observer.onNext(CreateVolumeResponse.newBuilder().setVolume(volume).build());
            observer.onCompleted();
        } catch (IOException | InterruptedException e) {
            observer.onError(Status.INTERNAL.withDescription("cannot serve the volume: " + e.getMessage()).asException());
        }
    }

    @Override
    public synchronized void deleteVolume(DeleteVolumeRequest request, StreamObserver<DeleteVolumeResponse> observer) {
        if (request.getVolumeId().isEmpty()) {
            observer.onError(Status.INVALID_ARGUMENT.withDescription("volume_id is required").asException());
            return;
        }
        volumes.entrySet().removeIf(entry -> {
            if (!entry.getValue().volume().getVolumeId().equals(request.getVolumeId())) {
                return false;
            }
            stop(entry.getValue());
            return true;
        });
        observer.onNext(DeleteVolumeResponse.getDefaultInstance());
        observer.onCompleted();
    }

    private static void stop(Created created) {
        try {
            created.server().terminate(Duration.ofSeconds(10));
            Files.deleteIfExists(created.image());
        } catch (IOException | InterruptedException e) {
            throw new IllegalStateException("cannot stop the server of " + created.volume().getVolumeId(), e);
        }
    }

    @Override
    public void close() {
        volumes.values().forEach(SanityController::stop);
        volumes.clear();
        if (endpoint != null) {
            endpoint.close();
        }
    }
}
