package io.kubenbd.operator.model;

/** Where an export is in its life, in one word for {@code kubectl get}. */
public enum ExportPhase {
    /** Waiting: for its PVC, for the server pod to be scheduled, or for the server to become ready. */
    Pending,
    /** The server is ready and the endpoint accepts clients. */
    Serving,
    /** It was serving, and now the server is not ready (restarting, failing) or a bitmap is lost. */
    Degraded,
    /** It cannot serve until a person changes something; the Ready condition says what. */
    Failed
}
