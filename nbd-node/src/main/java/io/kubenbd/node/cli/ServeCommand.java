package io.kubenbd.node.cli;

import io.kubenbd.node.server.ControlAddress;
import io.kubenbd.node.server.ControlServer;
import io.kubenbd.node.server.ExportConfig;
import io.kubenbd.node.server.ExportRegistry;
import io.kubenbd.node.server.NbdServer;
import io.kubenbd.node.server.ServerSettings;
import io.kubenbd.node.tls.MutualTls;
import io.kubenbd.node.tls.ServerTls;
import io.kubenbd.node.tls.ServerTlsCredentials;
import io.kubenbd.node.tls.TlsMode;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import sun.misc.Signal;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;

@Command(name = "serve", mixinStandardHelpOptions = true, usageHelpAutoWidth = true,
        description = "Serve files or block devices over NBD: fixed newstyle handshake, structured replies, "
                + "extended headers, base:allocation block status, multi-conn. SIGTERM or SIGINT stops accepting, "
                + "finishes in-flight requests, flushes and exits 0.",
        footer = {"",
                "Export keys (after NAME=PATH, comma-separated):",
                "  readonly            refuse writes",
                "  description=TEXT    shown to clients listing the exports",
                "  max-connections=N   connections at once (default 8; above 1 advertises multi-conn)",
                "",
                "TLS: --tls-psk FILE (make one with: psktool -u alice -p keys.psk), or --tls-cert FILE --tls-key FILE",
                "[--tls-ca FILE]. Key and certificate files are re-read when they change; live connections go on.",
                "",
                "Control API: --control unix:PATH (mode 0600), or --control HOST:PORT with --control-tls-cert FILE",
                "--control-tls-key FILE --control-tls-ca FILE: mutual TLS, clients need a certificate from that CA.",
                "",
                "Example:",
                "  nbd-node serve --port 10809 --export 'disk=/var/lib/disk.img,description=VM disk,max-connections=4'"})
final class ServeCommand implements Callable<Integer> {

    @Option(names = "--bind", paramLabel = "ADDR", description = "Address to listen on (default: 0.0.0.0).")
    String bind;

    @Option(names = "--port", paramLabel = "N", description = "TCP port (default: 10809).")
    Integer port;

    @Option(names = "--export", paramLabel = "NAME=PATH[,key[=value]...]",
            description = "An export; repeat for several. PATH is a regular (sparse) file or a block device.")
    List<String> exports = new ArrayList<>();

    @Option(names = "--config", paramLabel = "FILE",
            description = "YAML file with bind, port and exports (same keys as --export); flags override it.")
    Path config;

    @Option(names = "--handshake-timeout", paramLabel = "SECONDS", defaultValue = "10",
            description = "Drop clients that have not finished the handshake by then (default: ${DEFAULT-VALUE}).")
    int handshakeTimeout;

    @Option(names = "--io-threads", paramLabel = "N",
            description = "Threads for storage calls (default: twice the cores, at least 4).")
    Integer ioThreads;

    @Option(names = "--max-in-flight", paramLabel = "N", defaultValue = "64",
            description = "Requests per connection worked on at once before reading pauses (default: ${DEFAULT-VALUE}).")
    int maxInFlight;

    @Option(names = "--max-handshakes", paramLabel = "N", defaultValue = "" + ServerSettings.DEFAULT_MAX_HANDSHAKES,
            description = "Connections in the handshake at once; more are refused (default: ${DEFAULT-VALUE}).")
    int maxHandshakes;

    @Option(names = "--max-handshakes-per-peer", paramLabel = "N",
            defaultValue = "" + ServerSettings.DEFAULT_MAX_HANDSHAKES_PER_PEER,
            description = "Connections in the handshake at once from one address (default: ${DEFAULT-VALUE}).")
    int maxHandshakesPerPeer;

    @Option(names = "--buffer-budget", paramLabel = "MIB",
            description = "Request and reply data all connections may hold at once; a connection over it waits "
                    + "(default: half of the JVM's MaxDirectMemorySize).")
    Long bufferBudgetMib;

    @Option(names = "--write-timeout", paramLabel = "SECONDS", defaultValue = "60",
            description = "Close a connection whose replies have not been read for this long (default: ${DEFAULT-VALUE}).")
    int writeTimeout;

    @Option(names = "--idle-timeout", paramLabel = "SECONDS", defaultValue = "0",
            description = "Close a connection with no request for this long; 0 never (default: ${DEFAULT-VALUE}: "
                    + "kernel-attached volumes and VMs keep idle connections and do not all reconnect).")
    int idleTimeout;

    @Option(names = "--tls", paramLabel = "MODE",
            description = "off, on (STARTTLS offered) or require (nothing but STARTTLS before TLS). "
                    + "Default: require when credentials are given, else off.")
    String tlsMode;

    @Option(names = "--tls-psk", paramLabel = "FILE",
            description = "Pre-shared keys, identity:hexkey per line (psktool and qemu tls-creds-psk format).")
    Path tlsPsk;

    @Option(names = "--tls-cert", paramLabel = "FILE", description = "X.509 server certificate chain (PEM).")
    Path tlsCert;

    @Option(names = "--tls-key", paramLabel = "FILE", description = "Private key of --tls-cert (PEM).")
    Path tlsKey;

    @Option(names = "--tls-ca", paramLabel = "FILE",
            description = "Require client certificates that chain to this CA (PEM).")
    Path tlsCa;

    @Option(names = "--state-dir", paramLabel = "DIR",
            description = "Keep dirty bitmaps in DIR/export-NAME.bitmaps/ instead of beside each export's data "
                    + "(needed for block devices).")
    Path stateDir;

    @Option(names = "--control", paramLabel = "ADDR",
            description = "Serve the gRPC control API (exports, connections, statistics, dirty bitmaps) on unix:PATH "
                    + "(mode 0600) or HOST:PORT (mutual TLS: needs --control-tls-cert, --control-tls-key, --control-tls-ca).")
    String control;

    @Option(names = "--control-tls-cert", paramLabel = "FILE",
            description = "Certificate chain (PEM) of a TCP control API.")
    Path controlTlsCert;

    @Option(names = "--control-tls-key", paramLabel = "FILE", description = "Private key of --control-tls-cert (PEM).")
    Path controlTlsKey;

    @Option(names = "--control-tls-ca", paramLabel = "FILE",
            description = "CA (PEM) that control API clients' certificates must chain to (with extended key usage clientAuth).")
    Path controlTlsCa;

    @Override
    public Integer call() throws Exception {
        List<ExportConfig> configs = new ArrayList<>();
        String bindAddress = "0.0.0.0";
        int bindPort = 10809;
        if (config != null) {
            ServeConfigFile file = ServeConfigFile.load(config);
            configs.addAll(file.exports());
            bindAddress = file.bind() != null ? file.bind() : bindAddress;
            bindPort = file.port() != null ? file.port() : bindPort;
        }
        for (String spec : exports) {
            configs.add(ExportSpec.parse(spec));
        }
        bindAddress = bind != null ? bind : bindAddress;
        bindPort = port != null ? port : bindPort;
        if (configs.isEmpty()) {
            throw new IllegalArgumentException("nothing to serve: give at least one --export NAME=PATH or a --config file");
        }
        if (bindPort < 0 || bindPort > 65535) {
            throw new IllegalArgumentException("--port must be 0..65535, got " + bindPort);
        }
        ServerSettings defaults = ServerSettings.defaults();
        if (writeTimeout < 1 || idleTimeout < 0 || (bufferBudgetMib != null && bufferBudgetMib < 1)) {
            throw new IllegalArgumentException("--write-timeout and --buffer-budget must be at least 1, "
                    + "--idle-timeout at least 0");
        }
        if (maxHandshakes < 1 || maxHandshakesPerPeer < 1) {
            throw new IllegalArgumentException("--max-handshakes and --max-handshakes-per-peer must be at least 1");
        }
        ServerSettings settings = new ServerSettings(Duration.ofSeconds(handshakeTimeout),
                ioThreads != null ? ioThreads : defaults.ioThreads(), maxInFlight, defaults.maxInFlightBytes(),
                defaults.shutdownGrace(), maxHandshakes, maxHandshakesPerPeer,
                bufferBudgetMib == null ? 0 : bufferBudgetMib << 20, Duration.ofSeconds(writeTimeout),
                Duration.ofSeconds(idleTimeout));

        // Handling the signals ourselves (rather than a shutdown hook) lets a graceful stop exit 0.
        // They are caught from the start, so a SIGTERM during start-up still stops gracefully.
        CountDownLatch stopRequested = new CountDownLatch(1);
        for (String signal : List.of("TERM", "INT")) {
            Signal.handle(new Signal(signal), s -> stopRequested.countDown());
        }
        ControlAddress controlAddress = control == null ? null : ControlAddress.parse(control);
        MutualTls controlTls = controlTls(controlAddress);
        ServerTls tls = serverTls();
        if (stateDir != null) {
            java.nio.file.Files.createDirectories(stateDir);
        }
        ExportRegistry registry = ExportRegistry.open(configs, stateDir);
        // The control API first: whoever sees the NBD port open (tests, the operator's probes) can use it at once.
        ControlServer controlServer = controlAddress == null ? null : ControlServer.start(controlAddress, registry, controlTls);
        NbdServer server;
        try {
            server = NbdServer.start(new InetSocketAddress(bindAddress, bindPort), registry, settings, tls);
        } catch (java.io.IOException | InterruptedException | RuntimeException e) {
            if (controlServer != null) {
                controlServer.close();
            }
            throw e;
        }
        stopRequested.await();
        if (controlServer != null) {
            controlServer.close();
        }
        server.shutdownGracefully();
        return 0;
    }

    /** Mutual TLS for a TCP control address (which is never served without it); none for a unix socket. */
    private MutualTls controlTls(ControlAddress address) throws java.io.IOException {
        boolean any = controlTlsCert != null || controlTlsKey != null || controlTlsCa != null;
        if (!(address instanceof ControlAddress.Tcp)) {
            if (any) {
                throw new IllegalArgumentException("--control-tls-cert, --control-tls-key and --control-tls-ca are for a "
                        + "TCP --control address; a unix socket is guarded by its file mode (0600)");
            }
            return null;
        }
        if (controlTlsCert == null || controlTlsKey == null || controlTlsCa == null) {
            throw new IllegalArgumentException("--control " + control + " is a TCP address, served only with mutual TLS: "
                    + "give --control-tls-cert, --control-tls-key and --control-tls-ca (or use --control unix:PATH)");
        }
        Logger log = LoggerFactory.getLogger(ControlServer.class);
        return MutualTls.fromFiles(controlTlsCert, controlTlsKey, controlTlsCa,
                message -> log.info("control API TLS credentials {}", message));
    }

    private ServerTls serverTls() throws java.io.IOException {
        boolean x509 = tlsCert != null || tlsKey != null || tlsCa != null;
        if (tlsPsk != null && x509) {
            throw new IllegalArgumentException("--tls-psk and --tls-cert/--tls-key/--tls-ca exclude each other");
        }
        if (x509 && (tlsCert == null || tlsKey == null)) {
            throw new IllegalArgumentException("X.509 needs both --tls-cert and --tls-key");
        }
        boolean credentials = tlsPsk != null || x509;
        TlsMode mode = tlsMode != null ? TlsMode.parse(tlsMode) : credentials ? TlsMode.REQUIRE : TlsMode.OFF;
        if (mode == TlsMode.OFF) {
            if (credentials) {
                throw new IllegalArgumentException("--tls off with TLS credentials: drop one or the other");
            }
            return ServerTls.OFF;
        }
        Logger log = LoggerFactory.getLogger(ServerTls.class);
        java.util.function.Consumer<String> report = message -> log.info("TLS credentials {}", message);
        ServerTlsCredentials material = tlsPsk != null
                ? ServerTlsCredentials.Psk.fromFile(tlsPsk, report)
                : x509 ? ServerTlsCredentials.X509.fromFiles(tlsCert, tlsKey, tlsCa, report) : null;
        return new ServerTls(mode, material);
    }
}
