package io.kubenbd.node.tls;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The pre-shared keys of a {@code keys.psk} file: one {@code identity:hexkey} line per key,
 * as {@code psktool -u ID -p FILE} writes them and qemu's {@code tls-creds-psk} reads them.
 * Blank lines and lines starting with {@code #} are ignored. Errors name the file and line,
 * never the key.
 */
public record PskKeyFile(Path path, Map<String, PskKey> keys) {

    public PskKeyFile {
        keys = Map.copyOf(keys);
    }

    public static PskKeyFile read(Path path) throws IOException {
        return parse(path, Files.readString(path, StandardCharsets.UTF_8));
    }

    static PskKeyFile parse(Path path, String text) throws IOException {
        Map<String, PskKey> keys = new LinkedHashMap<>();
        List<String> lines = text.lines().toList();
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i).strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String where = path + " line " + (i + 1);
            int colon = line.lastIndexOf(':');
            if (colon <= 0 || colon == line.length() - 1) {
                throw new IOException(where + ": expected identity:hexkey");
            }
            String identity = line.substring(0, colon);
            byte[] key;
            try {
                key = HexFormat.of().parseHex(line.substring(colon + 1));
            } catch (IllegalArgumentException e) {
                throw new IOException(where + ": the key of '" + identity + "' is not hexadecimal");
            }
            if (keys.put(identity, new PskKey(identity, key)) != null) {
                throw new IOException(where + ": identity '" + identity + "' appears twice");
            }
        }
        if (keys.isEmpty()) {
            throw new IOException(path + ": no identity:hexkey line");
        }
        return new PskKeyFile(path, keys);
    }

    public Optional<PskKey> find(String identity) {
        return Optional.ofNullable(keys.get(identity));
    }

    /** The only key, for a client given a file without an identity; fails if there are several. */
    public PskKey single() throws IOException {
        if (keys.size() != 1) {
            throw new IOException(path + " holds " + keys.size() + " identities; say which one to use");
        }
        return keys.values().iterator().next();
    }

    @Override
    public String toString() {
        return "PskKeyFile[" + path + ", identities=" + keys.keySet() + "]";
    }
}
