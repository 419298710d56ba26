package io.kubenbd.node.server;

import java.net.InetSocketAddress;
import java.nio.file.Path;

/** Where the control API listens: {@code unix:PATH} or {@code HOST:PORT}, never the NBD port. */
public sealed interface ControlAddress {
    record Unix(Path path) implements ControlAddress {
        @Override
        public String toString() {
            return "unix:" + path;
        }
    }

    record Tcp(InetSocketAddress address) implements ControlAddress {
        @Override
        public String toString() {
            return address.getHostString() + ":" + address.getPort();
        }
    }

    static ControlAddress parse(String text) {
        if (text.startsWith("unix:")) {
            String path = text.substring("unix:".length());
            if (path.isEmpty()) {
                throw new IllegalArgumentException("control address 'unix:' needs a socket path");
            }
            return new Unix(Path.of(path));
        }
        int colon = text.lastIndexOf(':');
        if (colon <= 0) {
            throw new IllegalArgumentException("control address '" + text + "': expected unix:PATH or HOST:PORT");
        }
        String host = text.substring(0, colon).replaceAll("^\\[|\\]$", "");
        int port;
        try {
            port = Integer.parseInt(text.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("control address '" + text + "': port is not a number");
        }
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("control address '" + text + "': port must be 0..65535");
        }
        return new Tcp(new InetSocketAddress(host, port));
    }
}
