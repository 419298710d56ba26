package io.kubenbd.node.csi;

import io.grpc.stub.StreamObserver;
import io.kubenbd.node.csi.v1.GetPluginCapabilitiesRequest;
import io.kubenbd.node.csi.v1.GetPluginCapabilitiesResponse;
import io.kubenbd.node.csi.v1.GetPluginInfoRequest;
import io.kubenbd.node.csi.v1.GetPluginInfoResponse;
import io.kubenbd.node.csi.v1.IdentityGrpc;
import io.kubenbd.node.csi.v1.ProbeRequest;
import io.kubenbd.node.csi.v1.ProbeResponse;
import com.google.protobuf.BoolValue;

/**
 * The CSI Identity service of the node plugin: the driver's name and version, no plugin
 * capabilities (the controller service is the operator's, on another socket: the node plugin
 * only stages and publishes), and readiness.
 */
final class IdentityService extends IdentityGrpc.IdentityImplBase {
    static final String DRIVER_NAME = "nbd.csi.kubenbd.io";
    static final String VERSION = "0.1.0";

    @Override
    public void getPluginInfo(GetPluginInfoRequest request, StreamObserver<GetPluginInfoResponse> observer) {
        observer.onNext(GetPluginInfoResponse.newBuilder().setName(DRIVER_NAME).setVendorVersion(VERSION).build());
        observer.onCompleted();
    }

    @Override
    public void getPluginCapabilities(GetPluginCapabilitiesRequest request,
                                      StreamObserver<GetPluginCapabilitiesResponse> observer) {
        observer.onNext(GetPluginCapabilitiesResponse.getDefaultInstance());
        observer.onCompleted();
    }

    @Override
    public void probe(ProbeRequest request, StreamObserver<ProbeResponse> observer) {
        observer.onNext(ProbeResponse.newBuilder().setReady(BoolValue.of(true)).build());
        observer.onCompleted();
    }
}
