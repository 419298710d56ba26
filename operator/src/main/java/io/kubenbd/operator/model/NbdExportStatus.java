package io.kubenbd.operator.model;

import io.fabric8.kubernetes.api.model.Condition;

import java.util.List;

/**
 * What the operator observed. Conditions carry a machine-readable reason and a message a person
 * can act on; {@code observedGeneration} says which spec they describe.
 */
public record NbdExportStatus(
        ExportPhase phase,
        List<Condition> conditions,
        String node,
        EndpointStatus endpoint,
        List<DirtyBitmapStatus> dirtyBitmaps,
        String persistentVolume,
        Long observedGeneration) {

    public NbdExportStatus {
        conditions = conditions == null ? List.of() : List.copyOf(conditions);
        dirtyBitmaps = dirtyBitmaps == null ? List.of() : List.copyOf(dirtyBitmaps);
    }

    /** The condition of the given type, or null. */
    public Condition condition(String type) {
        return conditions.stream().filter(c -> type.equals(c.getType())).findFirst().orElse(null);
    }
}
