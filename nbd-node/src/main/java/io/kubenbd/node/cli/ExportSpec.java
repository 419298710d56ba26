package io.kubenbd.node.cli;

import io.kubenbd.node.server.ExportConfig;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The one parser of export definitions. {@code --export NAME=PATH[,key[=value]...]} and each
 * entry of a YAML config become the same key/value map and are checked here, so a key added
 * later works in both places. A comma followed by text that is not a key belongs to the
 * previous value, so paths and descriptions may contain commas; text shaped like
 * {@code word=value} with an unknown word is refused as a mistyped key.
 */
final class ExportSpec {
    static final Set<String> KEYS = Set.of("readonly", "description", "max-connections");
    private static final java.util.regex.Pattern KEY_SHAPE = java.util.regex.Pattern.compile("[A-Za-z][A-Za-z0-9_-]*");

    private ExportSpec() {}

    /** Parses the {@code --export} form. */
    static ExportConfig parse(String spec) {
        int eq = spec.indexOf('=');
        if (eq <= 0) {
            throw new IllegalArgumentException("--export '" + spec + "': expected NAME=PATH[,key=value...]");
        }
        String name = spec.substring(0, eq);
        String[] parts = spec.substring(eq + 1).split(",", -1);
        StringBuilder path = new StringBuilder(parts[0]);
        Map<String, String> options = new LinkedHashMap<>();
        String lastKey = null;
        for (int i = 1; i < parts.length; i++) {
            String part = parts[i];
            String key = part.contains("=") ? part.substring(0, part.indexOf('=')) : part;
            if (part.contains("=") && KEY_SHAPE.matcher(key).matches() && !KEYS.contains(key.toLowerCase(Locale.ROOT))) {
                // Most likely a mistyped key; swallowing it into the previous value would hide the typo.
                throw new IllegalArgumentException("--export '" + name + "': unknown key '" + key
                        + "' (known: " + String.join(", ", KEYS.stream().sorted().toList()) + ")");
            }
            if (KEYS.contains(key.toLowerCase(Locale.ROOT))) {
                lastKey = key.toLowerCase(Locale.ROOT);
                if (options.containsKey(lastKey)) {
                    throw new IllegalArgumentException("--export '" + name + "': " + lastKey + " given twice");
                }
                options.put(lastKey, part.contains("=") ? part.substring(part.indexOf('=') + 1) : null);
            } else if (lastKey == null) {
                path.append(',').append(part);
            } else if (options.get(lastKey) != null) {
                options.put(lastKey, options.get(lastKey) + "," + part);
            } else {
                throw new IllegalArgumentException("--export '" + name + "': unknown key '" + key
                        + "' (known: " + String.join(", ", KEYS.stream().sorted().toList()) + ")");
            }
        }
        return build(name, path.toString(), options);
    }

    /** Builds an export from its name, path and options; values may be null for flags. */
    static ExportConfig build(String name, String path, Map<String, String> options) {
        String where = "export '" + name + "'";
        if (name.isEmpty()) {
            throw new IllegalArgumentException("export name must not be empty");
        }
        if (path == null || path.isEmpty()) {
            throw new IllegalArgumentException(where + ": path is missing");
        }
        for (String key : options.keySet()) {
            if (!KEYS.contains(key)) {
                throw new IllegalArgumentException(where + ": unknown key '" + key + "' (known: "
                        + String.join(", ", KEYS.stream().sorted().toList()) + ")");
            }
        }
        boolean readOnly = bool(where, "readonly", options.get("readonly"), options.containsKey("readonly"));
        String description = options.getOrDefault("description", "");
        int maxConnections = ExportConfig.DEFAULT_MAX_CONNECTIONS;
        if (options.containsKey("max-connections")) {
            String value = options.get("max-connections");
            try {
                maxConnections = Integer.parseInt(value == null ? "" : value.trim());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(where + ": max-connections must be a number, got '" + value + "'");
            }
            if (maxConnections < 1 || maxConnections > 1024) {
                throw new IllegalArgumentException(where + ": max-connections must be 1..1024, got " + maxConnections);
            }
        }
        return new ExportConfig(name, Path.of(path), readOnly, description, maxConnections);
    }

    private static boolean bool(String where, String key, String value, boolean present) {
        if (!present) {
            return false;
        }
        if (value == null) {
            return true;
        }
        return switch (value.trim().toLowerCase(Locale.ROOT)) {
            case "true", "yes", "on", "1", "" -> true;
            case "false", "no", "off", "0" -> false;
            default -> throw new IllegalArgumentException(where + ": " + key + " must be true or false, got '" + value + "'");
        };
    }
}
