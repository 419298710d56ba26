package io.kubenbd.operator.reconciler;

import io.javaoperatorsdk.operator.processing.event.ResourceID;
import io.kubenbd.operator.model.ExportPhase;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The {@code kubenbd_exports{phase=...}} gauges: how many exports this operator last saw in each
 * phase. (Reconcile counts and latency come from java-operator-sdk's micrometer support.)
 */
public final class ExportMetrics {
    private final Map<ResourceID, ExportPhase> phases = new ConcurrentHashMap<>();

    public ExportMetrics(MeterRegistry registry) {
        for (ExportPhase phase : ExportPhase.values()) {
            Gauge.builder("kubenbd.exports", phases, m -> m.values().stream().filter(p -> p == phase).count())
                    .description("NbdExports by phase, as last reconciled")
                    .tag("phase", phase.name())
                    .register(registry);
        }
    }

    void phase(ResourceID export, ExportPhase phase) {
        phases.put(export, phase);
    }

    void removed(ResourceID export) {
        phases.remove(export);
    }
}
