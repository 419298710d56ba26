package io.kubenbd.node.server;

import io.grpc.Status;
import io.kubenbd.node.control.v1.AddBitmapRequest;
import io.kubenbd.node.control.v1.Bitmap;
import io.kubenbd.node.control.v1.BitmapRequest;
import io.kubenbd.node.control.v1.CheckpointRequest;
import io.kubenbd.node.control.v1.MergeBitmapsRequest;
import io.kubenbd.node.control.v1.RemoveBitmapResponse;
import io.kubenbd.node.storage.DirtyBitmapInfo;
import io.kubenbd.node.storage.DirtyBitmapLimitException;
import io.kubenbd.node.storage.DirtyBitmapSet;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import io.grpc.stub.StreamObserver;
import io.kubenbd.node.control.v1.Connection;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ExportStatus;
import io.kubenbd.node.control.v1.GetStatisticsRequest;
import io.kubenbd.node.control.v1.ListExportsRequest;
import io.kubenbd.node.control.v1.ListExportsResponse;

/**
 * The gRPC {@code ExportControl} service: answers from the live export registry and runs
 * bitmap operations. Unknown exports are NOT_FOUND; nothing here changes what clients read
 * or write.
 */
final class ExportControlService extends ExportControlGrpc.ExportControlImplBase {
    private static final Logger log = LoggerFactory.getLogger(ExportControlService.class);

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
                .setServerDirectMemory(Math.max(0, io.netty.util.internal.PlatformDependent.usedDirectMemory()))
                .build());
        response.onCompleted();
    }

    @Override
    public void addBitmap(AddBitmapRequest request, StreamObserver<Bitmap> response) {
        long granularity = request.getGranularity() == 0 ? DirtyBitmapSet.DEFAULT_GRANULARITY : request.getGranularity();
        onBitmaps(request.getExport(), "add bitmap " + request.getName(), response, set -> bitmap(set.add(request.getName(), granularity)));
    }

    @Override
    public void clearBitmap(BitmapRequest request, StreamObserver<Bitmap> response) {
        onBitmaps(request.getExport(), "clear bitmap " + request.getName(), response, set -> {
            set.clear(request.getName());
            return bitmap(set.info(request.getName()).orElseThrow());
        });
    }

    @Override
    public void removeBitmap(BitmapRequest request, StreamObserver<RemoveBitmapResponse> response) {
        onBitmaps(request.getExport(), "remove bitmap " + request.getName(), response, set -> {
            set.remove(request.getName());
            return RemoveBitmapResponse.getDefaultInstance();
        });
    }

    @Override
    public void checkpoint(CheckpointRequest request, StreamObserver<Bitmap> response) {
        long granularity = request.getGranularity() == 0 ? DirtyBitmapSet.DEFAULT_GRANULARITY : request.getGranularity();
        onBitmaps(request.getExport(), "checkpoint: freeze " + request.getFreeze() + ", start " + request.getStart(),
                response, set -> bitmap(set.checkpoint(request.getFreeze(), request.getStart(), granularity)));
    }

    @Override
    public void mergeBitmaps(MergeBitmapsRequest request, StreamObserver<Bitmap> response) {
        onBitmaps(request.getExport(), "merge " + request.getSourcesList() + " into " + request.getTarget(), response, set -> {
            set.merge(request.getTarget(), request.getSourcesList());
            return bitmap(set.info(request.getTarget()).orElseThrow());
        });
    }

    private interface BitmapOperation<T> {
        T apply(DirtyBitmapSet bitmaps) throws IOException;
    }

    /**
     * Runs a bitmap operation on an export's set and answers with its result, or with the
     * status a caller can act on: NOT_FOUND for an unknown export, INVALID_ARGUMENT for bad
     * names or granularities, RESOURCE_EXHAUSTED for a bitmap
     * beyond the export's bound, FAILED_PRECONDITION for a bitmap in the wrong state, INTERNAL
     * when the bitmap files cannot be written.
     */
    private <T> void onBitmaps(String exportName, String what, StreamObserver<T> response,
                               BitmapOperation<T> operation) {
        Export export = exports.find(exportName).filter(e -> !exportName.isEmpty()).orElse(null);
        if (export == null) {
            response.onError(Status.NOT_FOUND.withDescription("no export named '" + exportName + "'").asRuntimeException());
            return;
        }
        try {
            DirtyBitmapSet set = export.bitmapsForUpdate();
            T result;
            synchronized (set) {
                result = operation.apply(set);
            }
            log.info("export={} control API: {}", exportName, what);
            response.onNext(result);
            response.onCompleted();
        } catch (DirtyBitmapLimitException e) {
            response.onError(Status.RESOURCE_EXHAUSTED.withDescription(e.getMessage()).asRuntimeException());
        } catch (IllegalArgumentException e) {
            response.onError(Status.INVALID_ARGUMENT.withDescription(e.getMessage()).asRuntimeException());
        } catch (IllegalStateException e) {
            response.onError(Status.FAILED_PRECONDITION.withDescription(e.getMessage()).asRuntimeException());
        } catch (IOException e) {
            log.warn("export={} control API: {} failed: {}", exportName, what, e.getMessage());
            response.onError(Status.INTERNAL.withDescription(e.getMessage()).asRuntimeException());
        }
    }

    static Bitmap bitmap(DirtyBitmapInfo info) {
        return Bitmap.newBuilder()
                .setName(info.name())
                .setGranularity(info.granularity())
                .setState(info.state().name().toLowerCase(java.util.Locale.ROOT))
                .setDirtyBytes(info.dirtyBytes())
                .setReason(info.reason() == null ? "" : info.reason())
                .build();
    }

    private static ExportStatus status(Export export) {
        ExportStatus.Builder status = ExportStatus.newBuilder()
                .setName(export.name())
                .setPath(export.config().path().toString())
                .setSize(export.size())
                .setReadOnly(export.readOnly())
                .setDescription(export.config().description())
                .setMaxConnections(export.config().maxConnections());
        export.writer().ifPresent(node -> status.setWriter(node.getHostAddress()));
        export.metaContexts().forEach(c -> status.addMetaContexts(c.name()));
        export.bitmaps().ifPresent(set -> set.list().forEach(info -> status.addBitmaps(bitmap(info))));
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
