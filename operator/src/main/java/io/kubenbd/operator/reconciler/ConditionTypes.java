package io.kubenbd.operator.reconciler;

/** The condition types an NbdExport's status carries. */
public final class ConditionTypes {
    /** The endpoint accepts clients. */
    public static final String READY = "Ready";
    /** The PSK or certificate Secret exists and has the keys the server needs. */
    public static final String SECRET_READY = "SecretReady";
    /** The PVC exists, is bound, fits the source, and no one else writes to it. */
    public static final String VOLUME_READY = "VolumeReady";
    /** The server pod has a node. */
    public static final String SERVER_SCHEDULED = "ServerScheduled";
    /** The server's dirty bitmaps match the spec. */
    public static final String BITMAPS_SYNCED = "BitmapsSynced";

    private ConditionTypes() {}
}
