package io.kubenbd.node.server;

import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ListExportsRequest;
import io.kubenbd.node.control.v1.ListExportsResponse;
import io.kubenbd.node.testing.CertTool;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import io.kubenbd.node.tls.MutualTls;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static io.kubenbd.node.testing.NbdNodeJar.jar;
import static io.kubenbd.node.testing.NbdNodeJar.java;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The control API on TCP against a running {@code nbd-node serve}: mutual TLS only, client
 * certificates from the configured CA only, certificate files re-read when they change, and
 * no TCP control endpoint at all without them.
 */
class ControlTlsIT {
    private static final Duration LIMIT = Duration.ofSeconds(60);
    private static final String SERVER_TEMPLATE = "cn = kube-nbd server\nip_address = 127.0.0.1\ndns_name = nbd-control.test\n"
            + "tls_www_server\nsigning_key\nencryption_key\n";
    private static final String CLIENT_TEMPLATE = "cn = kube-nbd-operator\ntls_www_client\nsigning_key\nencryption_key\n";

    /** CA "ca" with a server and an operator (client) certificate; CA "rogue" with a client certificate. */
    private static ScratchDir pki;
    private ScratchDir scratch;
    private Path image;

    @BeforeAll
    static void makeCertificates() throws Exception {
        PeerCommand.requireInstalled("certtool");
        pki = ScratchDir.create("kube-nbd-control-pki-");
        CertTool.ca(pki.path(), "ca", "control CA");
        CertTool.cert(pki.path(), "server", pki.path(), "ca", SERVER_TEMPLATE);
        CertTool.cert(pki.path(), "operator", pki.path(), "ca", CLIENT_TEMPLATE);
        CertTool.ca(pki.path(), "rogue", "control CA");
        CertTool.cert(pki.path(), "rogue-client", pki.path(), "rogue", CLIENT_TEMPLATE);
        CertTool.ca(pki.path(), "ca2", "control CA 2");
        CertTool.cert(pki.path(), "server2", pki.path(), "ca2", SERVER_TEMPLATE);
        CertTool.cert(pki.path(), "operator2", pki.path(), "ca2", CLIENT_TEMPLATE);
    }

    @AfterAll
    static void deleteCertificates() throws IOException {
        if (pki != null) {
            pki.close();
        }
    }

    @BeforeEach
    void createScratch() throws IOException {
        scratch = ScratchDir.create("kube-nbd-control-");
        image = scratch.sparseFile("disk.img", 1 << 20);
    }

    @AfterEach
    void deleteScratch() throws IOException {
        scratch.close();
    }

    @Test
    void onTcpOnlyClientsWithACertificateFromTheControlCaAreServed() throws Exception {
        int controlPort = freePort();
        try (ServerProcess server = serveWithControlTls(controlPort, pki.resolve("server-cert.pem"),
                pki.resolve("server-key.pem"), pki.resolve("ca-cert.pem"))) {
            ListExportsResponse answer = listExports(controlPort, client("operator", "ca"));
            assertThat(answer.getExports(0).getName()).isEqualTo("disk");

            assertThatThrownBy(() -> listExports(controlPort, InsecureChannelCredentials.create()))
                    .as("a plaintext client").isInstanceOf(StatusRuntimeException.class);
            assertThatThrownBy(() -> listExports(controlPort, TlsChannelCredentials.newBuilder()
                    .trustManager(pki.resolve("ca-cert.pem").toFile()).build()))
                    .as("a TLS client without a certificate").isInstanceOf(StatusRuntimeException.class);
            assertThatThrownBy(() -> listExports(controlPort, client("rogue-client", "ca")))
                    .as("a client certificate from another CA with the same name").isInstanceOf(StatusRuntimeException.class);
            assertThatThrownBy(() -> listExports(controlPort, client("server", "ca")))
                    .as("a certificate of the right CA that is not for TLS clients (a server's)")
                    .isInstanceOf(StatusRuntimeException.class);
            assertThat(server.log()).contains("control API listening on 127.0.0.1:" + controlPort
                    + " (mutual TLS: client certificates from CN=control CA)");
            assertThat(server.log()).doesNotContain("PRIVATE KEY");
            assertThat(server.process().isAlive()).isTrue();
        }
    }

    @Test
    void rotatedCertificatesAndCaAreUsedWithoutARestart() throws Exception {
        Path mounted = scratch.resolve("control-tls");
        Files.createDirectories(mounted);
        install(mounted, "server", "ca");
        int controlPort = freePort();
        try (ServerProcess server = serveWithControlTls(controlPort, mounted.resolve("tls.crt"),
                mounted.resolve("tls.key"), mounted.resolve("ca.crt"))) {
            assertThat(listExports(controlPort, client("operator", "ca")).getExportsCount()).isEqualTo(1);
            install(mounted, "server2", "ca2");
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (true) {
                try {
                    listExports(controlPort, client("operator2", "ca2"));
                    break;
                } catch (StatusRuntimeException notYet) {
                    if (System.nanoTime() > deadline) {
                        throw new AssertionError("the new CA was not taken within 20 s; log:\n" + server.log(), notYet);
                    }
                    Thread.sleep(200);
                }
            }
            assertThatThrownBy(() -> listExports(controlPort, client("operator", "ca2")))
                    .as("the old CA's client certificate, after the rotation").isInstanceOf(StatusRuntimeException.class);
            assertThat(server.log()).contains("control API TLS credentials reloaded");
        }
    }

    @Test
    void serveRefusesATcpControlAddressWithoutItsCertificates() throws Exception {
        PeerCommand.Result none = serve("--control", "127.0.0.1:0");
        assertThat(none.exitCode()).isEqualTo(2);
        assertThat(none.stderr().strip()).isEqualTo("nbd-node: --control 127.0.0.1:0 is a TCP address, served only with "
                + "mutual TLS: give --control-tls-cert, --control-tls-key and --control-tls-ca (or use --control unix:PATH)");
        PeerCommand.Result noCa = serve("--control", "127.0.0.1:0",
                "--control-tls-cert", pki.resolve("server-cert.pem").toString(),
                "--control-tls-key", pki.resolve("server-key.pem").toString());
        assertThat(noCa.exitCode()).isEqualTo(2);
        assertThat(noCa.stderr()).contains("served only with mutual TLS: give --control-tls-cert, --control-tls-key and --control-tls-ca");
        PeerCommand.Result missing = serve("--control", "127.0.0.1:0",
                "--control-tls-cert", pki.resolve("server-cert.pem").toString(),
                "--control-tls-key", pki.resolve("server-key.pem").toString(),
                "--control-tls-ca", scratch.resolve("no-such-ca.pem").toString());
        assertThat(missing.exitCode()).isEqualTo(1);
        assertThat(missing.stderr().strip()).isEqualTo("nbd-node: no such file: " + scratch.resolve("no-such-ca.pem"));
        PeerCommand.Result unix = serve("--control", "unix:" + scratch.resolve("c.sock"),
                "--control-tls-ca", pki.resolve("ca-cert.pem").toString());
        assertThat(unix.exitCode()).isEqualTo(2);
        assertThat(unix.stderr().strip()).isEqualTo("nbd-node: --control-tls-cert, --control-tls-key and --control-tls-ca "
                + "are for a TCP --control address; a unix socket is guarded by its file mode (0600)");
    }

    @Test
    void ctlSpeaksMutualTlsToATcpControlAddress() throws Exception {
        int controlPort = freePort();
        try (ServerProcess server = serveWithControlTls(controlPort, pki.resolve("server-cert.pem"),
                pki.resolve("server-key.pem"), pki.resolve("ca-cert.pem"))) {
            PeerCommand.Result exports = ctl(controlPort, "--tls-cert", pki.resolve("operator-cert.pem").toString(),
                    "--tls-key", pki.resolve("operator-key.pem").toString(), "--tls-ca", pki.resolve("ca-cert.pem").toString(),
                    "--tls-server-name", "nbd-control.test", "exports");
            assertThat(exports.exitCode()).as(exports.stderr()).isZero();
            assertThat(exports.stdout()).startsWith("disk  " + image);

            PeerCommand.Result plain = ctl(controlPort, "exports");
            assertThat(plain.exitCode()).isEqualTo(2);
            assertThat(plain.stderr().strip()).isEqualTo("nbd-node: ctl --control 127.0.0.1:" + controlPort
                    + " needs --tls-cert, --tls-key and --tls-ca: a TCP control API speaks mutual TLS only");

            PeerCommand.Result wrongName = ctl(controlPort, "--tls-cert", pki.resolve("operator-cert.pem").toString(),
                    "--tls-key", pki.resolve("operator-key.pem").toString(), "--tls-ca", pki.resolve("ca-cert.pem").toString(),
                    "--tls-server-name", "someone-else.test", "exports");
            assertThat(wrongName.exitCode()).isEqualTo(1);
            assertThat(wrongName.stderr()).startsWith("nbd-node: control API at 127.0.0.1:" + controlPort + ": ");
            assertThat(server.process().isAlive()).isTrue();
        }
    }

    private ServerProcess serveWithControlTls(int controlPort, Path cert, Path key, Path ca) throws Exception {
        ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image, "--control", "127.0.0.1:" + controlPort,
                "--control-tls-cert", cert.toString(), "--control-tls-key", key.toString(), "--control-tls-ca", ca.toString());
        long deadline = System.nanoTime() + LIMIT.toNanos();
        while (!server.log().contains("control API listening")) {
            if (System.nanoTime() > deadline || !server.process().isAlive()) {
                String log = server.log();
                server.close();
                throw new AssertionError("the control API did not start:\n" + log);
            }
            Thread.sleep(50);
        }
        return server;
    }

    /** Writes a Secret volume's files as Kubernetes updates them: new files, renamed into place. */
    private static void install(Path dir, String server, String ca) throws IOException {
        for (String[] file : new String[][]{{server + "-cert.pem", "tls.crt"}, {server + "-key.pem", "tls.key"},
                {ca + "-cert.pem", "ca.crt"}}) {
            Path next = dir.resolve("." + file[1] + ".new");
            Files.copy(pki.resolve(file[0]), next, StandardCopyOption.REPLACE_EXISTING);
            Files.move(next, dir.resolve(file[1]), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        }
    }

    private static ChannelCredentials client(String name, String ca) throws IOException {
        MutualTls tls = MutualTls.fromFiles(pki.resolve(name + "-cert.pem"), pki.resolve(name + "-key.pem"),
                pki.resolve(ca + "-cert.pem"), message -> { });
        return TlsChannelCredentials.newBuilder().keyManager(tls.keyManager()).trustManager(tls.trustManager()).build();
    }

    private static ListExportsResponse listExports(int port, ChannelCredentials credentials) {
        ManagedChannel channel = Grpc.newChannelBuilderForAddress("127.0.0.1", port, credentials).build();
        try {
            return ExportControlGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS)
                    .listExports(ListExportsRequest.getDefaultInstance());
        } finally {
            channel.shutdownNow();
        }
    }

    private PeerCommand.Result serve(String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of(java(), "-jar", jar(), "serve", "--bind", "127.0.0.1",
                "--port", "0", "--export", "disk=" + image));
        command.addAll(List.of(args));
        return PeerCommand.run(LIMIT, command);
    }

    private static PeerCommand.Result ctl(int port, String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of(java(), "-jar", jar(), "ctl", "--control", "127.0.0.1:" + port));
        command.addAll(List.of(args));
        return PeerCommand.run(LIMIT, command);
    }

    private static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return socket.getLocalPort();
        }
    }
}
