package io.kubenbd.node.server;

import io.kubenbd.node.protocol.Limits;
import io.kubenbd.node.storage.DirtyBitmapSet;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Objects;
import java.util.regex.Pattern;

/**
 * What to serve under one name, as given on the command line or in the config file.
 *
 * @param path           the data, or with {@code backing} the writable top layer
 * @param maxConnections connections allowed at once; more than one advertises multi-conn
 * @param bitmaps        dirty bitmaps to keep (created if the export has none of that name yet)
 * @param backing        read-only layers below {@code path}, nearest first
 * @param format         how {@code path} is read; never guessed from the file's contents, so a
 *                       guest cannot turn its raw disk into something else by writing a header
 * @param contexts       the meta contexts besides the dirty bitmaps that clients may negotiate:
 *                       {@code base:allocation} and {@code qemu:allocation-depth}, or fewer
 */
public record ExportConfig(String name, Path path, boolean readOnly, String description, int maxConnections,
                           List<BitmapSpec> bitmaps, List<Path> backing, Format format, List<String> contexts) {
    /** The meta contexts an export offers besides its bitmaps, unless told otherwise. */
    public static final List<String> ALL_CONTEXTS = List.of("base:allocation", "qemu:allocation-depth");

    /** The layout of the export's own file. */
    public enum Format {
        /** The bytes of the file or block device are the export. */
        RAW,
        /** kube-nbd's copy-on-write top layer ({@code nbd-node image create}), over {@code backing} if any. */
        OVERLAY
    }
    public static final int DEFAULT_MAX_CONNECTIONS = 8;

    /** A dirty bitmap to keep for an export. */
    public record BitmapSpec(String name, long granularity) {
        public static final long DEFAULT_GRANULARITY = DirtyBitmapSet.DEFAULT_GRANULARITY;
        private static final Pattern NAME = Pattern.compile(DirtyBitmapSet.NAME_PATTERN);

        public BitmapSpec {
            if (!NAME.matcher(name).matches()) {
                throw new IllegalArgumentException("bitmap name '" + name + "' must match " + DirtyBitmapSet.NAME_PATTERN);
            }
            if (granularity < DirtyBitmapSet.MIN_GRANULARITY || granularity > DirtyBitmapSet.MAX_GRANULARITY
                    || Long.bitCount(granularity) != 1) {
                throw new IllegalArgumentException("bitmap '" + name + "': granularity must be a power of two from 512"
                        + " to 64M, got " + granularity);
            }
        }
    }

    public ExportConfig {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(path, "path");
        description = description == null ? "" : description;
        bitmaps = List.copyOf(bitmaps);
        backing = List.copyOf(backing);
        if (name.getBytes(StandardCharsets.UTF_8).length > Limits.MAX_STRING) {
            throw new IllegalArgumentException("export name longer than 4096 bytes");
        }
        if (maxConnections < 1) {
            throw new IllegalArgumentException("max-connections must be at least 1, got " + maxConnections);
        }
        Objects.requireNonNull(format, "format");
        if (!backing.isEmpty() && format != Format.OVERLAY) {
            throw new IllegalArgumentException("export '" + name + "': backing layers need format=overlay for the top layer");
        }
        if (bitmaps.stream().map(BitmapSpec::name).distinct().count() != bitmaps.size()) {
            throw new IllegalArgumentException("export '" + name + "': a bitmap name is given twice");
        }
        contexts = List.copyOf(contexts);
        for (String context : contexts) {
            if (!ALL_CONTEXTS.contains(context)) {
                throw new IllegalArgumentException("export '" + name + "': context must be one of " + ALL_CONTEXTS
                        + " (dirty bitmaps are offered by bitmap=), got '" + context + "'");
            }
        }
    }

    /** An export offering every meta context. */
    public ExportConfig(String name, Path path, boolean readOnly, String description, int maxConnections,
                        List<BitmapSpec> bitmaps, List<Path> backing, Format format) {
        this(name, path, readOnly, description, maxConnections, bitmaps, backing, format, ALL_CONTEXTS);
    }

    /** An export of one file or device, without bitmaps or backing layers. */
    public ExportConfig(String name, Path path, boolean readOnly, String description, int maxConnections) {
        this(name, path, readOnly, description, maxConnections, List.of(), List.of(), Format.RAW);
    }
}
