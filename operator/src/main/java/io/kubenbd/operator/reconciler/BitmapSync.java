package io.kubenbd.operator.reconciler;

import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.kubenbd.node.control.v1.AddBitmapRequest;
import io.kubenbd.node.control.v1.Bitmap;
import io.kubenbd.node.control.v1.BitmapRequest;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ExportStatus;
import io.kubenbd.node.control.v1.ListExportsRequest;
import io.kubenbd.operator.controltls.ControlCa;
import io.kubenbd.operator.model.DirtyBitmapSpec;
import io.kubenbd.operator.model.DirtyBitmapStatus;
import io.kubenbd.operator.model.NbdExport;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Brings the running server's dirty bitmaps in line with {@code spec.dirtyBitmaps} through its
 * gRPC control API, so adding, clearing or removing a bitmap never restarts the server: missing
 * bitmaps are added, ones the spec no longer names are removed, a changed granularity replaces
 * the bitmap, and a new {@code clearRequest} clears it once.
 */
public final class BitmapSync {
    private static final long DEADLINE_SECONDS = 10;

    private final ControlCa controlCa;

    public BitmapSync(ControlCa controlCa) {
        this.controlCa = controlCa;
    }

    /** What the server reported after the changes, one entry per bitmap. */
    public record Outcome(List<DirtyBitmapStatus> bitmaps, List<String> changes) {
    }

    /** Thrown when the control API cannot be reached or refuses a change; the message says which. */
    public static final class ControlApiException extends Exception {
        ControlApiException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /**
     * @param previous the bitmap statuses from the last reconcile (for the clear requests already carried out)
     */
    public Outcome sync(NbdExport export, String host, int port, List<DirtyBitmapStatus> previous) throws ControlApiException {
        // Mutual TLS: the operator's client certificate, and the server's checked against the
        // control CA and the export's own server name (not the pod IP, which no certificate names).
        ManagedChannel channel = NettyChannelBuilder.forAddress(host, port, controlCa.clientCredentials())
                .overrideAuthority(ExportResources.controlServerName(export)).build();
        try {
            var stub = ExportControlGrpc.newBlockingStub(channel);
            String name = export.exportName();
            Map<String, Bitmap> actual = new LinkedHashMap<>();
            for (Bitmap bitmap : exportStatus(stub, name).getBitmapsList()) {
                actual.put(bitmap.getName(), bitmap);
            }
            Map<String, String> clearedBefore = new LinkedHashMap<>();
            previous.forEach(b -> clearedBefore.put(b.name(), b.clearRequest()));
            List<String> changes = new ArrayList<>();
            List<DirtyBitmapStatus> result = new ArrayList<>();
            for (DirtyBitmapSpec wanted : export.getSpec().dirtyBitmaps()) {
                Bitmap bitmap = actual.remove(wanted.name());
                String cleared = clearedBefore.get(wanted.name());
                if (bitmap != null && bitmap.getGranularity() != wanted.granularityOrDefault()) {
                    call(() -> stub.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
                            .removeBitmap(request(name, wanted.name())), "remove bitmap " + wanted.name());
                    changes.add("replaced bitmap " + wanted.name() + " (granularity " + bitmap.getGranularity()
                            + " -> " + wanted.granularityOrDefault() + ")");
                    bitmap = null;
                }
                if (bitmap == null) {
                    bitmap = call(() -> stub.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS).addBitmap(
                            AddBitmapRequest.newBuilder().setExport(name).setName(wanted.name())
                                    .setGranularity(wanted.granularityOrDefault()).build()), "add bitmap " + wanted.name());
                    changes.add("added bitmap " + wanted.name());
                    cleared = wanted.clearRequest(); // a new bitmap is empty: the request is already met
                } else if (wanted.clearRequest() != null && !wanted.clearRequest().equals(cleared)) {
                    bitmap = call(() -> stub.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
                            .clearBitmap(request(name, wanted.name())), "clear bitmap " + wanted.name());
                    changes.add("cleared bitmap " + wanted.name() + " (clearRequest " + wanted.clearRequest() + ")");
                    cleared = wanted.clearRequest();
                }
                result.add(new DirtyBitmapStatus(bitmap.getName(), bitmap.getGranularity(), bitmap.getState(),
                        bitmap.getDirtyBytes(), bitmap.getReason().isEmpty() ? null : bitmap.getReason(), cleared));
            }
            for (String extra : actual.keySet()) {
                call(() -> stub.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS).removeBitmap(request(name, extra)),
                        "remove bitmap " + extra);
                changes.add("removed bitmap " + extra);
            }
            return new Outcome(result, changes);
        } finally {
            channel.shutdownNow();
        }
    }

    private static ExportStatus exportStatus(ExportControlGrpc.ExportControlBlockingStub stub, String name)
            throws ControlApiException {
        var exports = call(() -> stub.withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
                .listExports(ListExportsRequest.getDefaultInstance()), "list exports");
        return exports.getExportsList().stream().filter(e -> e.getName().equals(name)).findFirst()
                .orElseThrow(() -> new ControlApiException("the server does not serve an export named '" + name + "'", null));
    }

    private static BitmapRequest request(String export, String bitmap) {
        return BitmapRequest.newBuilder().setExport(export).setName(bitmap).build();
    }

    private interface ControlCall<T> {
        T run();
    }

    private static <T> T call(ControlCall<T> call, String what) throws ControlApiException {
        try {
            return call.run();
        } catch (StatusRuntimeException e) {
            String detail = e.getStatus().getDescription() == null ? e.getStatus().getCode().toString()
                    : e.getStatus().getCode() + ": " + e.getStatus().getDescription();
            throw new ControlApiException("control API: " + what + " failed (" + detail + ")", e);
        }
    }
}
