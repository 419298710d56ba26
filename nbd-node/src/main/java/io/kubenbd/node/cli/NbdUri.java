package io.kubenbd.node.cli;

import java.net.URI;
import java.net.URISyntaxException;

/** An {@code nbd://HOST[:PORT][/EXPORT]} address (the NBD URI scheme qemu and libnbd use). */
record NbdUri(String host, int port, String exportName) {
    static final int DEFAULT_PORT = 10809;

    static NbdUri parse(String text) {
        URI uri;
        try {
            uri = new URI(text);
        } catch (URISyntaxException e) {
            throw new IllegalArgumentException("'" + text + "' is not a URI: " + e.getReason());
        }
        if (!"nbd".equals(uri.getScheme())) {
            throw new IllegalArgumentException("'" + text + "': only nbd://HOST[:PORT][/EXPORT] is supported here");
        }
        if (uri.getHost() == null) {
            throw new IllegalArgumentException("'" + text + "' has no host");
        }
        // getPath() undoes percent-encoding only; URLDecoder would also turn '+' into a space.
        String path = uri.getPath() == null ? "" : uri.getPath();
        String name = path.startsWith("/") ? path.substring(1) : path;
        return new NbdUri(uri.getHost(), uri.getPort() < 0 ? DEFAULT_PORT : uri.getPort(), name);
    }
}
