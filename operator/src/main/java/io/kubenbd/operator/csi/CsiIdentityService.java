package io.kubenbd.operator.csi;

import com.google.protobuf.BoolValue;
import io.grpc.stub.StreamObserver;
import io.kubenbd.node.csi.v1.GetPluginCapabilitiesRequest;
import io.kubenbd.node.csi.v1.GetPluginCapabilitiesResponse;
import io.kubenbd.node.csi.v1.GetPluginInfoRequest;
import io.kubenbd.node.csi.v1.GetPluginInfoResponse;
import io.kubenbd.node.csi.v1.IdentityGrpc;
import io.kubenbd.node.csi.v1.PluginCapability;
import io.kubenbd.node.csi.v1.ProbeRequest;
import io.kubenbd.node.csi.v1.ProbeResponse;
import io.kubenbd.operator.reconciler.ExportResources;

/**
 * The Identity of the controller plugin: the driver's name (the external-attacher only acts on
 * VolumeAttachments naming it), the CONTROLLER_SERVICE capability (without it the attacher marks
 * every attachment attached without asking), and readiness.
 */
final class CsiIdentityService extends IdentityGrpc.IdentityImplBase {
    static final String VERSION = "0.1.0";

    @Override
    public void getPluginInfo(GetPluginInfoRequest request, StreamObserver<GetPluginInfoResponse> observer) {
        observer.onNext(GetPluginInfoResponse.newBuilder().setName(ExportResources.CSI_DRIVER).setVendorVersion(VERSION).build());
        observer.onCompleted();
    }

    @Override
    public void getPluginCapabilities(GetPluginCapabilitiesRequest request,
                                      StreamObserver<GetPluginCapabilitiesResponse> observer) {
        observer.onNext(GetPluginCapabilitiesResponse.newBuilder().addCapabilities(PluginCapability.newBuilder()
                .setService(PluginCapability.Service.newBuilder().setType(PluginCapability.Service.Type.CONTROLLER_SERVICE)))
                .build());
        observer.onCompleted();
    }

    @Override
    public void probe(ProbeRequest request, StreamObserver<ProbeResponse> observer) {
        observer.onNext(ProbeResponse.newBuilder().setReady(BoolValue.of(true)).build());
        observer.onCompleted();
    }
}
