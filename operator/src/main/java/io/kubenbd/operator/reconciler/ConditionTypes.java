package io.kubenbd.operator.reconciler;

/** The condition types an NbdExport's status carries. */
public final class ConditionTypes {
    /** The endpoint accepts clients. */
    public static final String READY = "Ready";
    /** The PSK or certificate Secret exists and has the keys the server needs. */
    public static final String SECRET_READY = "SecretReady";
    /** The PVC exists, is bound, fits the source, and no one else writes to it. */
    public static final String VOLUME_READY = "VolumeReady";
    /** The PersistentVolume the spec asks for may be offered as asked (its class, the claim it is bound to). */
    public static final String PERSISTENT_VOLUME_READY = "PersistentVolumeReady";
    /** Clients prove who they are (a PSK, or a certificate signed by the export's CA); False says anyone may connect. */
    public static final String CLIENTS_AUTHENTICATED = "ClientsAuthenticated";
    /** The server pod has a node. */
    public static final String SERVER_SCHEDULED = "ServerScheduled";
    /** The server's dirty bitmaps match the spec. */
    public static final String BITMAPS_SYNCED = "BitmapsSynced";

    private ConditionTypes() {}
}
