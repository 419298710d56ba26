package io.kubenbd.node.server;

import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import io.kubenbd.node.control.v1.Connection;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ExportStatus;
import io.kubenbd.node.control.v1.GetStatisticsRequest;
import io.kubenbd.node.control.v1.ListExportsRequest;
import io.kubenbd.node.control.v1.ListExportsResponse;

/**
 * The gRPC {@code ExportControl} service: answers from the live export registry. Unknown
 * exports are NOT_FOUND; nothing here can change what clients read or write.
 */
final class ExportControlService extends ExportControlGrpc.ExportControlImplBase {
    private final ExportRegistry exports;

    ExportControlService(ExportRegistry exports) {
        this.exports = exports;
    }

    @Override
    public void listExports(ListExportsRequest request, StreamObserver<ListExportsResponse> response) {
        ListExportsResponse.Builder out = ListExportsResponse.newBuilder();
        for (Export export : exports.all()) {
            out.addExports(status(export));
        }
        response.onNext(out.build());
        response.onCompleted();
    }

    @Override
    public void getStatistics(GetStatisticsRequest request,
                              StreamObserver<io.kubenbd.node.control.v1.ExportStatistics> response) {
        Export export = exports.find(request.getExport()).orElse(null);
        if (export == null || request.getExport().isEmpty()) {
            response.onError(Status.NOT_FOUND.withDescription("no export named '" + request.getExport() + "'")
                    .asRuntimeException());
            return;
        }
        ExportStatistics stats = export.statistics();
        response.onNext(io.kubenbd.node.control.v1.ExportStatistics.newBuilder()
                .setExport(export.name())
                .setBytesRead(stats.bytesRead())
                .setBytesWritten(stats.bytesWritten())
                .setRequests(stats.requests())
                .setErrors(stats.errors())
                .setConnections(export.activeConnections())
                .build());
        response.onCompleted();
    }

    private static ExportStatus status(Export export) {
        ExportStatus.Builder status = ExportStatus.newBuilder()
                .setName(export.name())
                .setPath(export.config().path().toString())
                .setSize(export.size())
                .setReadOnly(export.readOnly())
                .setDescription(export.config().description())
                .setMaxConnections(export.config().maxConnections());
        export.metaContexts().forEach(c -> status.addMetaContexts(c.name()));
        for (ConnectionContext conn : export.connections()) {
            status.addConnections(Connection.newBuilder()
                    .setId(conn.id())
                    .setPeer(conn.peer())
                    .setReplies(conn.replies())
                    .setTls(conn.tls())
                    .setRequests(conn.requests()));
        }
        return status.build();
    }
}
