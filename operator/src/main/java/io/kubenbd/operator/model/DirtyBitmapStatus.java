package io.kubenbd.operator.model;

/**
 * One dirty bitmap as the running server reports it: its state ({@code recording},
 * {@code inconsistent}, ...), how many bytes it marks dirty, and the last {@code clearRequest} the
 * operator carried out.
 */
public record DirtyBitmapStatus(String name, Long granularity, String state, Long dirtyBytes, String reason,
                                String clearRequest) {
}
