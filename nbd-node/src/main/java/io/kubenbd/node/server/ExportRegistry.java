package io.kubenbd.node.server;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;

/** The exports a server offers, by name, in the order they were configured. */
public final class ExportRegistry implements AutoCloseable {
    private final Map<String, Export> exports = new LinkedHashMap<>();

    public static ExportRegistry open(Collection<ExportConfig> configs) throws IOException {
        return open(configs, null);
    }

    /**
     * @param stateDir where exports keep their dirty bitmaps ({@code DIR/export-NAME.bitmaps/}); null
     *                 keeps them beside each export's data ({@code PATH.bitmaps/}), which a block device
     *                 under /dev cannot offer
     */
    public static ExportRegistry open(Collection<ExportConfig> configs, Path stateDir) throws IOException {
        ExportRegistry registry = new ExportRegistry();
        try {
            for (ExportConfig config : configs) {
                if (registry.exports.containsKey(config.name())) {
                    throw new IllegalArgumentException("export '" + config.name() + "' is configured twice");
                }
                registry.exports.put(config.name(), Export.open(config, stateDir));
            }
        } catch (IOException | RuntimeException e) {
            registry.close();
            throw e;
        }
        return registry;
    }

    /** A registry of exports already open (tests build exports over their own backends). */
    static ExportRegistry of(Collection<Export> opened) {
        ExportRegistry registry = new ExportRegistry();
        opened.forEach(export -> registry.exports.put(export.name(), export));
        return registry;
    }

    /**
     * The export a client asked for. The empty name is the default export, which exists
     * when exactly one export is configured.
     */
    public Optional<Export> find(String name) {
        Export export = exports.get(name);
        if (export == null && name.isEmpty() && exports.size() == 1) {
            export = exports.values().iterator().next();
        }
        return Optional.ofNullable(export);
    }

    public Collection<Export> all() {
        return exports.values();
    }

    @Override
    public void close() throws IOException {
        IOException failure = null;
        for (Export export : exports.values()) {
            try {
                export.close();
            } catch (IOException e) {
                failure = e;
            }
        }
        exports.clear();
        if (failure != null) {
            throw failure;
        }
    }
}
