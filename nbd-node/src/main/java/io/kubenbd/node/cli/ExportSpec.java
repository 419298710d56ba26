package io.kubenbd.node.cli;

import io.kubenbd.node.server.ExportConfig;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
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
    static final Set<String> KEYS = Set.of("readonly", "description", "max-connections", "bitmap", "backing", "format", "context");
    /** Keys that may be given more than once; their values add up in order. */
    static final Set<String> REPEATABLE = Set.of("bitmap", "backing", "context");
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
        Map<String, List<String>> options = new LinkedHashMap<>();
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
                if (options.containsKey(lastKey) && !REPEATABLE.contains(lastKey)) {
                    throw new IllegalArgumentException("--export '" + name + "': " + lastKey + " given twice");
                }
                options.computeIfAbsent(lastKey, k -> new ArrayList<>())
                        .add(part.contains("=") ? part.substring(part.indexOf('=') + 1) : null);
            } else if (lastKey == null) {
                path.append(',').append(part);
            } else if (options.get(lastKey).getLast() != null) {
                List<String> values = options.get(lastKey);
                values.set(values.size() - 1, values.getLast() + "," + part);
            } else {
                throw new IllegalArgumentException("--export '" + name + "': unknown key '" + key
                        + "' (known: " + String.join(", ", KEYS.stream().sorted().toList()) + ")");
            }
        }
        return build(name, path.toString(), options);
    }

    /** Builds an export from its name, path and options; a value may be null for a flag. */
    static ExportConfig build(String name, String path, Map<String, List<String>> options) {
        String where = "export '" + name + "'";
        if (name.isEmpty()) {
            throw new IllegalArgumentException("export name must not be empty");
        }
        if (path == null || path.isEmpty()) {
            throw new IllegalArgumentException(where + ": path is missing");
        }
        for (var entry : options.entrySet()) {
            String key = entry.getKey();
            if (!KEYS.contains(key)) {
                throw new IllegalArgumentException(where + ": unknown key '" + key + "' (known: "
                        + String.join(", ", KEYS.stream().sorted().toList()) + ")");
            }
            if (entry.getValue().size() > 1 && !REPEATABLE.contains(key)) {
                throw new IllegalArgumentException(where + ": " + key + " given twice");
            }
        }
        boolean readOnly = bool(where, "readonly", single(options, "readonly"), options.containsKey("readonly"));
        String description = options.containsKey("description") ? single(options, "description") : "";
        int maxConnections = ExportConfig.DEFAULT_MAX_CONNECTIONS;
        if (options.containsKey("max-connections")) {
            String value = single(options, "max-connections");
            try {
                maxConnections = Integer.parseInt(value == null ? "" : value.trim());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(where + ": max-connections must be a number, got '" + value + "'");
            }
            if (maxConnections < 1 || maxConnections > 1024) {
                throw new IllegalArgumentException(where + ": max-connections must be 1..1024, got " + maxConnections);
            }
        }
        List<ExportConfig.BitmapSpec> bitmaps = new ArrayList<>();
        for (String value : options.getOrDefault("bitmap", List.of())) {
            bitmaps.add(bitmap(where, value));
        }
        List<Path> backing = new ArrayList<>();
        for (String value : options.getOrDefault("backing", List.of())) {
            if (value == null || value.isEmpty()) {
                throw new IllegalArgumentException(where + ": backing needs a path (backing=PATH)");
            }
            backing.add(Path.of(value));
        }
        ExportConfig.Format format = backing.isEmpty() ? ExportConfig.Format.RAW : ExportConfig.Format.OVERLAY;
        if (options.containsKey("format")) {
            String value = String.valueOf(single(options, "format")).trim().toLowerCase(Locale.ROOT);
            format = switch (value) {
                case "raw" -> ExportConfig.Format.RAW;
                case "overlay" -> ExportConfig.Format.OVERLAY;
                default -> throw new IllegalArgumentException(where + ": format must be raw or overlay, got '" + value + "'");
            };
        }
        List<String> contexts = options.containsKey("context")
                ? options.get("context").stream().map(c -> c == null ? "" : c.trim()).toList()
                : ExportConfig.ALL_CONTEXTS;
        try {
            return new ExportConfig(name, Path.of(path), readOnly, description == null ? "" : description,
                    maxConnections, bitmaps, backing, format, contexts);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(e.getMessage().startsWith("export") ? e.getMessage()
                    : where + ": " + e.getMessage(), e);
        }
    }

    /** {@code NAME[:GRANULARITY]}, the granularity in bytes or with a K or M suffix. */
    private static ExportConfig.BitmapSpec bitmap(String where, String value) {
        if (value == null || value.isEmpty()) {
            throw new IllegalArgumentException(where + ": bitmap needs a name (bitmap=NAME[:GRANULARITY])");
        }
        int colon = value.indexOf(':');
        String name = colon < 0 ? value : value.substring(0, colon);
        long granularity = colon < 0 ? ExportConfig.BitmapSpec.DEFAULT_GRANULARITY
                : ByteSize.parse(value.substring(colon + 1), where + ": bitmap '" + name + "' granularity");
        try {
            return new ExportConfig.BitmapSpec(name, granularity);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + ": " + e.getMessage(), e);
        }
    }

    private static String single(Map<String, List<String>> options, String key) {
        List<String> values = options.get(key);
        return values == null ? null : values.getFirst();
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
