package io.kubenbd.node.csi;

import java.util.Locale;
import java.util.Map;

/**
 * Where a volume's NBD export is, from the PersistentVolume's {@code volumeAttributes} (the
 * operator writes them): host, port, export name, how many connections to open, and the TLS
 * mode. The key itself arrives separately, through {@code nodeStageSecretRef}.
 */
public record VolumeContext(String host, int port, String exportName, int connections, TlsMode tlsMode) {

    /** How the plugin talks to the server. */
    public enum TlsMode { PSK, NONE }

    public static final int MAX_CONNECTIONS = 16;

    /** Parses volume attributes; the message of the exception names the attribute and what is wrong. */
    public static VolumeContext parse(Map<String, String> attributes) {
        String host = required(attributes, "host");
        String exportName = required(attributes, "exportName");
        int port = number(attributes, "port", "10809", 1, 65535);
        int connections = number(attributes, "connections", "1", 1, MAX_CONNECTIONS);
        String mode = attributes.getOrDefault("tlsMode", "psk").toLowerCase(Locale.ROOT);
        TlsMode tls = switch (mode) {
            case "psk" -> TlsMode.PSK;
            case "none" -> TlsMode.NONE;
            default -> throw new IllegalArgumentException("volume attribute tlsMode must be psk or none, got '" + mode + "'");
        };
        return new VolumeContext(host, port, exportName, connections, tls);
    }

    private static String required(Map<String, String> attributes, String key) {
        String value = attributes.get(key);
        if (value == null || value.isBlank()) {
            throw new IllegalArgumentException("volume attribute " + key + " is missing");
        }
        return value;
    }

    private static int number(Map<String, String> attributes, String key, String fallback, int min, int max) {
        String value = attributes.getOrDefault(key, fallback);
        try {
            int n = Integer.parseInt(value.trim());
            if (n < min || n > max) {
                throw new IllegalArgumentException("volume attribute " + key + " must be " + min + ".." + max + ", got " + n);
            }
            return n;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("volume attribute " + key + " must be a number, got '" + value + "'");
        }
    }

    @Override
    public String toString() {
        return (tlsMode == TlsMode.PSK ? "nbds://" : "nbd://") + host + ":" + port + "/" + exportName
                + " (" + connections + " connection" + (connections == 1 ? "" : "s") + ")";
    }
}
