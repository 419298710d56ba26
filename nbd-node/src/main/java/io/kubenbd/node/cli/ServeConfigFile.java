package io.kubenbd.node.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.kubenbd.node.server.ExportConfig;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The YAML form of {@code serve}'s options:
 * <pre>
 * bind: 0.0.0.0
 * port: 10809
 * exports:
 *   - name: disk
 *     path: /data/disk.img
 *     readonly: false
 *     description: VM disk
 *     max-connections: 8
 *     bitmap: [backup-base, hourly:1M]
 *     backing: [/data/golden.img]
 * </pre>
 */
record ServeConfigFile(String bind, Integer port, List<ExportConfig> exports) {

    private static String first(List<String> values) {
        return values == null || values.isEmpty() ? null : values.getFirst();
    }

    static ServeConfigFile load(Path file) throws IOException {
        Map<?, ?> root;
        try {
            ObjectMapper mapper = new ObjectMapper(new YAMLFactory());
            // A file with no document at all (empty, or only comments) reads as a missing node, not null.
            JsonNode tree = mapper.readTree(file.toFile());
            root = tree == null || tree.isMissingNode() ? null : mapper.treeToValue(tree, Map.class);
        } catch (IOException e) {
            throw new IOException("config " + file + ": " + e.getMessage().lines().findFirst().orElse(""), e);
        }
        if (root == null) {
            root = Map.of();
        }
        for (Object key : root.keySet()) {
            if (!List.of("bind", "port", "exports").contains(String.valueOf(key))) {
                throw new IllegalArgumentException("config " + file + ": unknown key '" + key + "' (known: bind, port, exports)");
            }
        }
        Object bind = root.get("bind");
        Object port = root.get("port");
        List<ExportConfig> exports = new ArrayList<>();
        if (root.get("exports") instanceof List<?> entries) {
            for (Object entry : entries) {
                if (!(entry instanceof Map<?, ?> map)) {
                    throw new IllegalArgumentException("config " + file + ": each export must be a mapping");
                }
                Map<String, List<String>> options = new LinkedHashMap<>();
                // A YAML list gives a repeatable key (bitmap, backing) several values.
                map.forEach((k, v) -> options.put(String.valueOf(k), v instanceof List<?> list
                        ? list.stream().map(e -> e == null ? null : String.valueOf(e)).collect(java.util.stream.Collectors.toList())
                        : java.util.Collections.singletonList(v == null ? null : String.valueOf(v))));
                String name = first(options.remove("name"));
                String path = first(options.remove("path"));
                if (name == null) {
                    throw new IllegalArgumentException("config " + file + ": an export has no name");
                }
                exports.add(ExportSpec.build(name, path, options));
            }
        } else if (root.containsKey("exports")) {
            throw new IllegalArgumentException("config " + file + ": exports must be a list");
        }
        Integer portNumber = null;
        if (port != null) {
            try {
                portNumber = Integer.valueOf(String.valueOf(port));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("config " + file + ": port must be a number, got '" + port + "'");
            }
        }
        return new ServeConfigFile(bind == null ? null : String.valueOf(bind), portNumber, exports);
    }
}
