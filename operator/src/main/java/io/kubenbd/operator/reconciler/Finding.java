package io.kubenbd.operator.reconciler;

import io.kubenbd.operator.model.ExportPhase;

/**
 * One observation that becomes a status condition. {@code blocks} is the phase the export is in
 * while this finding stands (null when it does not stop the export), and the message says what a
 * person can do about it.
 */
record Finding(String type, boolean ok, String reason, String message, ExportPhase blocks) {
    static Finding ok(String type, String reason, String message) {
        return new Finding(type, true, reason, message, null);
    }

    static Finding blocking(String type, ExportPhase phase, String reason, String message) {
        return new Finding(type, false, reason, message, phase);
    }
}
