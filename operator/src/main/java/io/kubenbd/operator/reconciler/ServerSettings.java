package io.kubenbd.operator.reconciler;

/**
 * How the operator runs NBD servers: the image holding {@code nbd-node}, its pull policy, the
 * port of the server's control API (used by the operator for dirty bitmaps), the JVM options
 * of the server (a small heap; NBD buffers are direct memory) and, when the chart fences no
 * namespace itself, who may reach the control port ({@link ControlNetworkPolicyDependent}; null:
 * the operator makes no NetworkPolicy).
 */
public record ServerSettings(String image, String imagePullPolicy, int controlPort, String javaOptions,
                             ControlNetworkPolicy controlNetworkPolicy) {
    public static final String DEFAULT_IMAGE = "ghcr.io/kube-nbd/kube-nbd:0.1.0";
    public static final int DEFAULT_CONTROL_PORT = 10810;
    public static final String DEFAULT_JAVA_OPTIONS =
            "-XX:+UseSerialGC -Xms8m -Xmx256m -XX:MaxDirectMemorySize=1g";

    /** Servers whose control port the operator fences with no NetworkPolicy of its own. */
    public ServerSettings(String image, String imagePullPolicy, int controlPort, String javaOptions) {
        this(image, imagePullPolicy, controlPort, javaOptions, null);
    }

    public static ServerSettings defaults() {
        return new ServerSettings(DEFAULT_IMAGE, "IfNotPresent", DEFAULT_CONTROL_PORT, DEFAULT_JAVA_OPTIONS);
    }
}
