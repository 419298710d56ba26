package io.kubenbd.node.server;

import io.kubenbd.node.protocol.Limits;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Objects;

/**
 * What to serve under one name, as given on the command line or in the config file.
 *
 * @param maxConnections connections allowed at once; more than one advertises multi-conn
 */
public record ExportConfig(String name, Path path, boolean readOnly, String description, int maxConnections) {
    public static final int DEFAULT_MAX_CONNECTIONS = 8;

    public ExportConfig {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(path, "path");
        description = description == null ? "" : description;
        if (name.getBytes(StandardCharsets.UTF_8).length > Limits.MAX_STRING) {
            throw new IllegalArgumentException("export name longer than 4096 bytes");
        }
        if (maxConnections < 1) {
            throw new IllegalArgumentException("max-connections must be at least 1, got " + maxConnections);
        }
    }
}
