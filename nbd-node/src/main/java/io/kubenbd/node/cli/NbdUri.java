package io.kubenbd.node.cli;

import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * An {@code nbd://HOST[:PORT][/EXPORT]} address (the NBD URI scheme qemu and libnbd use), or
 * {@code nbds://[IDENTITY@]HOST[:PORT][/EXPORT][?tls-psk-file=FILE]} for TLS as libnbd writes
 * it: the user part is the PSK identity ({@code tls-username=ID} says the same). {@code nbd://}
 * never uses TLS. Unknown query parameters are an error, not silently ignored.
 *
 * @param tlsUsername the PSK identity, or null
 * @param tlsPskFile  the {@code identity:hexkey} file, or null
 */
record NbdUri(String host, int port, String exportName, boolean tls, String tlsUsername, Path tlsPskFile) {
    static final int DEFAULT_PORT = 10809;
    private static final String FORMS = "only nbd://HOST[:PORT][/EXPORT] is supported here, "
            + "or nbds://[IDENTITY@]HOST[:PORT][/EXPORT][?tls-psk-file=FILE] for TLS";

    /** A plaintext {@code nbd://} address. */
    NbdUri(String host, int port, String exportName) {
        this(host, port, exportName, false, null, null);
    }

    static NbdUri parse(String text) {
        URI uri;
        try {
            uri = new URI(text);
        } catch (URISyntaxException e) {
            throw new IllegalArgumentException("'" + text + "' is not a URI: " + e.getReason());
        }
        boolean tls = "nbds".equals(uri.getScheme());
        if (!tls && !"nbd".equals(uri.getScheme())) {
            throw new IllegalArgumentException("'" + text + "': " + FORMS);
        }
        if (uri.getHost() == null) {
            throw new IllegalArgumentException("'" + text + "' has no host");
        }
        // getPath() undoes percent-encoding only; URLDecoder would also turn '+' into a space.
        String path = uri.getPath() == null ? "" : uri.getPath();
        String name = path.startsWith("/") ? path.substring(1) : path;
        String username = uri.getUserInfo();
        if (username != null && username.isEmpty()) {
            username = null;
        }
        Path pskFile = null;
        if (uri.getRawQuery() != null && !uri.getRawQuery().isEmpty()) {
            for (String parameter : uri.getRawQuery().split("&")) {
                int equals = parameter.indexOf('=');
                String key = decode(equals < 0 ? parameter : parameter.substring(0, equals));
                String value = equals < 0 ? "" : decode(parameter.substring(equals + 1));
                switch (key) {
                    case "tls-psk-file" -> {
                        if (value.isEmpty()) {
                            throw new IllegalArgumentException("'" + text + "': tls-psk-file needs a file name");
                        }
                        pskFile = Path.of(value);
                    }
                    case "tls-username" -> {
                        if (username != null && !username.equals(value)) {
                            throw new IllegalArgumentException("'" + text + "' names two TLS identities: '"
                                    + username + "' and tls-username='" + value + "'");
                        }
                        username = value.isEmpty() ? null : value;
                    }
                    default -> throw new IllegalArgumentException("'" + text + "': unknown query parameter '" + key
                            + "' (known: tls-psk-file, tls-username)");
                }
            }
        }
        if (!tls && (username != null || pskFile != null)) {
            throw new IllegalArgumentException("'" + text + "': a TLS identity or tls-psk-file needs nbds://, "
                    + "nbd:// is always plaintext");
        }
        return new NbdUri(uri.getHost(), uri.getPort() < 0 ? DEFAULT_PORT : uri.getPort(), name, tls, username, pskFile);
    }

    /** Percent-decoding of a query part; '+' stays '+' as in libnbd. */
    private static String decode(String raw) {
        return URLDecoder.decode(raw.replace("+", "%2B"), StandardCharsets.UTF_8);
    }
}
