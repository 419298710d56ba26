package io.kubenbd.node.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.kubenbd.node.testing.CertTool;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import java.io.BufferedReader;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.Writer;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.KeyStore;
import java.security.SecureRandom;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;
import org.bouncycastle.tls.BasicTlsPSKIdentity;
import org.bouncycastle.tls.PSKTlsClient;
import org.bouncycastle.tls.TlsClientProtocol;
import org.bouncycastle.tls.crypto.impl.bc.BcTlsCrypto;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * {@code nbd-node serve} with TLS against the real peers: qemu 10 (tls-creds-psk and
 * tls-creds-x509), libnbd 1.14 (nbdinfo, nbdcopy, the Python bindings), and raw sockets for
 * what no peer will do on purpose (options before STARTTLS, garbage after it, silence).
 */
class ServerTlsIT {
    private static final Duration LIMIT = Duration.ofSeconds(30);
    private static final String PYTHON = "/usr/bin/python3";
    private static final int MIB = 1024 * 1024;
    private static final String EXPORT = "tls-export-name";

    // NBD constants, spelled out here so that a mistake in the main code's tables cannot hide.
    private static final long NBDMAGIC = 0x4e42444d41474943L;
    private static final long IHAVEOPT = 0x49484156454F5054L;
    private static final long REPLY_MAGIC = 0x3e889045565a9L;
    private static final int OPT_EXPORT_NAME = 1;
    private static final int OPT_ABORT = 2;
    private static final int OPT_LIST = 3;
    private static final int OPT_STARTTLS = 5;
    private static final int OPT_INFO = 6;
    private static final int OPT_GO = 7;
    private static final int REP_ACK = 1;
    private static final int REP_SERVER = 2;
    private static final int REP_INFO = 3;
    private static final int REP_ERR_POLICY = 0x80000002;
    private static final int REP_ERR_INVALID = 0x80000003;
    private static final int REP_ERR_TLS_REQD = 0x80000005;

    /** One CA, a server certificate for 127.0.0.1 and a client certificate, made once for all tests. */
    private static ScratchDir pki;

    private ScratchDir scratch;
    private Path image;

    @BeforeAll
    static void makeCertificates() throws Exception {
        PeerCommand.requireInstalled("certtool", "psktool", "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo", "nbdcopy");
        pki = ScratchDir.create("kube-nbd-pki-");
        makeCa(pki.path(), "ca", "test CA");
        makeCert(pki.path(), "ca", "server", "cn = 127.0.0.1\nip_address = 127.0.0.1\ndns_name = localhost\n"
                + "tls_www_server\nencryption_key\nsigning_key\n");
        makeCert(pki.path(), "ca", "client", "cn = test client\ntls_www_client\nencryption_key\nsigning_key\n");
    }

    @AfterAll
    static void deleteCertificates() throws IOException {
        if (pki != null) {
            pki.close();
        }
    }

    @BeforeEach
    void createScratch() throws IOException {
        scratch = ScratchDir.create("kube-nbd-tls-");
        image = scratch.sparseFile("disk.img", 64L * MIB);
    }

    @AfterEach
    void deleteScratch() throws IOException {
        scratch.close();
    }

    // ---- 1. PSK with every peer

    @Test
    void pskWithQemuAndLibnbdPeers() throws Exception {
        Path keys = scratch.resolve("keys.psk");
        String key = psk(keys, "alice");
        Path copy = scratch.resolve("copy.img");
        try (ServerProcess server = ServerProcess.nbdNode("--tls-psk", keys.toString(), "--export", EXPORT + "=" + image)) {
            String info = run(qemuImg(server, "info", pskObject(scratch.path(), "alice"))).assertSuccess().stdout();
            assertThat(info).contains("virtual size: 64 MiB (67108864 bytes)");

            PeerCommand.Result io = run(qemuIo(server, pskObject(scratch.path(), "alice"),
                    "write -P 0x5c 0 4M", "read -P 0x5c 0 4M", "write -P 0xa7 5000 70000", "read -P 0xa7 5000 70000",
                    "read -P 0x5c 0 5000", "flush")).assertSuccess();
            assertThat(io.stdout() + io.stderr()).doesNotContain("failed", "verification", "Pattern");
            assertThat(ScratchDir.readAt(image, 0, 5000)).containsOnly(0x5c);
            assertThat(ScratchDir.readAt(image, 5000, 70000)).containsOnly(0xa7);
            assertThat(server.log()).contains("transmission: extended replies");

            List<String> list = run("qemu-nbd", "--list", "--object",
                    "tls-creds-psk,id=tls0,endpoint=client,dir=" + scratch.path() + ",username=alice",
                    "--tls-creds", "tls0", "-b", "127.0.0.1", "-p", String.valueOf(server.port()))
                    .assertSuccess().stdout().lines().toList();
            assertThat(list).contains("exports available: 1", " export: '" + EXPORT + "'", "  size:  67108864",
                    "  transaction size: 64-bit");

            String nbdinfo = run("nbdinfo", pskUri(server, "alice", keys)).assertSuccess().stdout();
            assertThat(nbdinfo).contains("protocol: newstyle-fixed with TLS", "export-size: 67108864");

            // nbdcopy takes the PSK file in the URI as it is: it allows local files in URIs.
            long before = countLines(server, "TLS established");
            PeerCommand.Result nbdcopy = run("nbdcopy", "--threads=4", "--connections=4",
                    pskUri(server, "alice", keys), copy.toString()).assertSuccess();
            assertThat(Files.mismatch(image, copy)).as(nbdcopy.stderr()).isEqualTo(-1L);
            assertThat(countLines(server, "TLS established") - before).as("nbdcopy's TLS connections").isEqualTo(4);

            String log = server.log();
            // GnuTLS lists AES-256-GCM first; the server picks by its own order.
            assertThat(log).contains("TLS established: TLSv1.3 TLS_AES_128_GCM_SHA256, PSK identity 'alice'")
                    .doesNotContain("TLS_AES_256", "CHACHA", "Exception");
            assertNoKeyIn(log, key);
        }
    }

    // ---- 2. X.509

    @Test
    void x509WithQemuAndNbdinfo() throws Exception {
        Path clientDir = clientDir("x509-client", "ca", null);
        try (ServerProcess server = x509Server(null)) {
            String info = run(qemuImg(server, "info", x509Object(clientDir))).assertSuccess().stdout();
            assertThat(info).contains("virtual size: 64 MiB (67108864 bytes)");
            PeerCommand.Result io = run(qemuIo(server, x509Object(clientDir),
                    "write -P 0x3e 1M 2M", "read -P 0x3e 1M 2M", "read -P 0 0 1M")).assertSuccess();
            assertThat(io.stdout() + io.stderr()).doesNotContain("failed", "verification", "Pattern");
            assertThat(ScratchDir.readAt(image, MIB, 2 * MIB)).containsOnly(0x3e);

            String list = run("nbdinfo", "--list", "nbds://127.0.0.1:" + server.port() + "/?tls-certificates=" + clientDir)
                    .assertSuccess().stdout();
            assertThat(list).contains("protocol: newstyle-fixed with TLS", "export=\"" + EXPORT + "\":",
                    "export-size: 67108864");
            assertThat(server.log()).contains("TLS established: TLSv1.3 TLS_AES_")
                    .contains("transmission: extended replies").doesNotContain("Exception");

            // A CA the client does not trust: the client refuses the server.
            makeCa(scratch.path(), "other-ca", "other CA");
            Path strangerDir = clientDir("stranger", "other-ca", null);
            PeerCommand.Result refused = run(qemuImg(server, "info", x509Object(strangerDir)));
            assertThat(refused.exitCode()).isNotZero();
            assertThat(refused.stderr()).containsIgnoringCase("certificate");
        }
    }

    @Test
    void x509ClientCertificatesAreCheckedAgainstTlsCa() throws Exception {
        Path withCert = clientDir("with-cert", "ca", "client");
        Path withoutCert = clientDir("without-cert", "ca", null);
        // Same name as the real CA, different key: the client offers the certificate, the server must check it.
        makeCa(scratch.path(), "rogue-ca", "test CA");
        makeCert(scratch.path(), "rogue-ca", "rogue", "cn = rogue client\ntls_www_client\nencryption_key\nsigning_key\n");
        Path rogue = scratch.resolve("rogue-client");
        Files.createDirectories(rogue);
        // qemu checks its own certificate against ca-cert.pem too, so it holds both CAs.
        Files.writeString(rogue.resolve("ca-cert.pem"), Files.readString(pki.resolve("ca-cert.pem"))
                + Files.readString(scratch.resolve("rogue-ca-cert.pem")));
        Files.copy(scratch.resolve("rogue-cert.pem"), rogue.resolve("client-cert.pem"));
        Files.copy(scratch.resolve("rogue-key.pem"), rogue.resolve("client-key.pem"));

        try (ServerProcess server = x509Server(pki.resolve("ca-cert.pem"))) {
            // With --tls-ca the server speaks TLS 1.2 (see x509ClientCertificatesFromGnuTlsClientsWork);
            // forcing it on the client side too checks that nothing depends on the client's choice.
            String tls12 = ",priority=NORMAL:-VERS-TLS1.3";
            run(qemuImg(server, "info", x509Object(withCert) + tls12)).assertSuccess();
            PeerCommand.Result io = run(qemuIo(server, x509Object(withCert) + tls12,
                    "write -P 0x71 0 64k", "read -P 0x71 0 64k")).assertSuccess();
            assertThat(io.stdout() + io.stderr()).doesNotContain("failed", "verification");
            assertThat(ScratchDir.readAt(image, 0, 64 * 1024)).containsOnly(0x71);
            assertThat(server.log()).contains("TLS established: TLSv1.2 TLS_ECDHE_RSA_WITH_AES_");

            PeerCommand.Result noCert = run(qemuImg(server, "info", x509Object(withoutCert)));
            assertThat(noCert.exitCode()).as("a client without a certificate").isNotZero();
            PeerCommand.Result noCert12 = run(qemuImg(server, "info", x509Object(withoutCert) + tls12));
            assertThat(noCert12.exitCode()).as("a client without a certificate, TLS 1.2").isNotZero();
            PeerCommand.Result noCertNbdinfo = run("nbdinfo",
                    "nbds://127.0.0.1:" + server.port() + "/" + EXPORT + "?tls-certificates=" + withoutCert);
            assertThat(noCertNbdinfo.exitCode()).isNotZero();
            PeerCommand.Result rogueCert = run(qemuImg(server, "info", x509Object(rogue) + tls12));
            assertThat(rogueCert.exitCode()).as("a client certificate from another CA").isNotZero();

            waitFor(() -> countLines(server, "TLS handshake failed") >= 4, "four refused handshakes in the log", server);
            String log = server.log();
            assertThat(log).containsPattern("peer=127\\.0\\.0\\.1:\\d+ .*TLS handshake failed")
                    .contains("Empty client certificate chain")
                    .contains("Path does not chain with any of the trust anchors");
            run(qemuImg(server, "info", x509Object(withCert) + tls12)).assertSuccess();
        }
    }

    /**
     * In TLS 1.3 the JDK's CertificateRequest lists only RSA-PSS, ECDSA and EdDSA in
     * signature_algorithms; GnuTLS 3.7 then sends no certificate for an RSA key. The server
     * therefore offers TLS 1.2 when client certificates are required, and qemu and libnbd
     * with certtool's default (RSA) client certificates connect without any priority tweak.
     */
    @Test
    void x509ClientCertificatesFromGnuTlsClientsWork() throws Exception {
        Path withCert = clientDir("with-cert", "ca", "client");
        try (ServerProcess server = x509Server(pki.resolve("ca-cert.pem"))) {
            run(qemuImg(server, "info", x509Object(withCert))).assertSuccess();
            run("nbdinfo", "nbds://127.0.0.1:" + server.port() + "/" + EXPORT + "?tls-certificates=" + withCert)
                    .assertSuccess();
        }
    }

    // ---- 3. Refusals

    @Test
    void wrongKeyAndUnknownIdentityAreRefusedAndTheServerGoesOn() throws Exception {
        Path keys = scratch.resolve("keys.psk");
        String key = psk(keys, "alice");
        Path wrongDir = scratch.resolve("wrong");
        Files.createDirectories(wrongDir);
        String wrongKey = psk(wrongDir.resolve("keys.psk"), "alice");
        Path strangerDir = scratch.resolve("stranger");
        Files.createDirectories(strangerDir);
        String strangerKey = psk(strangerDir.resolve("keys.psk"), "mallory");
        Files.writeString(strangerDir.resolve("keys.psk"), "mallory:" + key + "\n"); // alice's key, unknown name

        try (ServerProcess server = ServerProcess.nbdNode("--tls-psk", keys.toString(), "--export", EXPORT + "=" + image)) {
            PeerCommand.Result wrong = run("nbdinfo", pskUri(server, "alice", wrongDir.resolve("keys.psk")));
            assertThat(wrong.exitCode()).as("nbdinfo with the wrong key").isNotZero();
            wrong = run(qemuImg(server, "info", pskObject(wrongDir, "alice")));
            assertThat(wrong.exitCode()).as("qemu-img with the wrong key").isNotZero();
            waitFor(() -> countLines(server, "TLS handshake failed") >= 2, "two failed handshakes", server);
            assertThat(server.log()).containsPattern("conn=\\d+ peer=127\\.0\\.0\\.1:\\d+ .*TLS handshake failed");

            PeerCommand.Result unknown = run("nbdinfo", pskUri(server, "mallory", strangerDir.resolve("keys.psk")));
            assertThat(unknown.exitCode()).as("nbdinfo with an unknown identity").isNotZero();
            unknown = run(qemuImg(server, "info", pskObject(strangerDir, "mallory")));
            assertThat(unknown.exitCode()).as("qemu-img with an unknown identity").isNotZero();
            waitFor(() -> countLines(server, "TLS handshake failed") >= 4, "four failed handshakes", server);
            assertThat(server.log()).doesNotContain("PSK identity 'mallory'").doesNotContain("Exception");

            // The server still serves a client with the right key.
            run(qemuImg(server, "info", pskObject(scratch.path(), "alice"))).assertSuccess();
            run("nbdinfo", pskUri(server, "alice", keys)).assertSuccess();
            assertNoKeyIn(server.log(), key, wrongKey, strangerKey);
        }
    }

    @Test
    void requireRefusesEverythingButStartTlsInPlaintext() throws Exception {
        Path keys = scratch.resolve("keys.psk");
        String key = psk(keys, "alice");
        try (ServerProcess server = ServerProcess.nbdNode("--tls", "require", "--tls-psk", keys.toString(),
                "--export", EXPORT + "=" + image)) {
            PeerCommand.Result plain = run("nbdinfo", "nbd://127.0.0.1:" + server.port() + "/" + EXPORT);
            assertThat(plain.exitCode()).as("plaintext nbdinfo").isNotZero();
            PeerCommand.Result plainList = run("nbdinfo", "--list", "nbd://127.0.0.1:" + server.port());
            assertThat(plainList.exitCode()).isNotZero();
            assertThat(plainList.stdout()).doesNotContain(EXPORT);

            try (RawNbd nbd = RawNbd.connect(server.port())) {
                nbd.option(OPT_LIST, new byte[0]);
                assertTlsRequired(nbd.reply(), OPT_LIST);
                nbd.option(OPT_INFO, infoData(EXPORT));
                assertTlsRequired(nbd.reply(), OPT_INFO);
                nbd.option(OPT_INFO, infoData("no-such-export"));
                assertTlsRequired(nbd.reply(), OPT_INFO);
                nbd.option(OPT_GO, infoData(EXPORT));
                assertTlsRequired(nbd.reply(), OPT_GO);
                nbd.option(0x4242, new byte[] {1, 2, 3});
                assertTlsRequired(nbd.reply(), 0x4242);
                nbd.option(OPT_EXPORT_NAME, EXPORT.getBytes(StandardCharsets.UTF_8));
                assertThat(nbd.closedWithin(Duration.ofSeconds(5))).as("EXPORT_NAME before TLS hangs up").isTrue();
            }
            try (RawNbd nbd = RawNbd.connect(server.port())) {
                nbd.option(OPT_ABORT, new byte[0]);
                assertThat(nbd.reply().type()).as("ABORT is allowed before TLS").isEqualTo(REP_ACK);
            }
            assertThat(server.log()).contains("NBD_OPT_EXPORT_NAME before the required TLS, disconnecting");

            // After STARTTLS (Bouncy Castle's PSK client, TLS 1.2) the same options work, and a second STARTTLS is invalid.
            try (RawNbd nbd = RawNbd.connect(server.port())) {
                nbd.option(OPT_STARTTLS, new byte[0]);
                assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
                nbd.pskHandshake("alice", HexFormat.of().parseHex(key));
                nbd.option(OPT_LIST, new byte[0]);
                OptionReply server1 = nbd.reply();
                assertThat(server1.type()).isEqualTo(REP_SERVER);
                assertThat(new String(server1.data(), 4, server1.data().length - 4, StandardCharsets.UTF_8)).isEqualTo(EXPORT);
                assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
                nbd.option(OPT_STARTTLS, new byte[0]);
                assertThat(nbd.reply().type()).as("STARTTLS over TLS").isEqualTo(REP_ERR_INVALID);
                nbd.option(OPT_INFO, infoData(EXPORT));
                assertThat(nbd.reply().type()).isEqualTo(REP_INFO);
            }
            run("nbdinfo", pskUri(server, "alice", keys)).assertSuccess();
            assertNoKeyIn(server.log(), key);
        }
    }

    @Test
    void tlsOnServesPlaintextAndTlsClients() throws Exception {
        Path keys = scratch.resolve("keys.psk");
        String key = psk(keys, "alice");
        try (ServerProcess server = ServerProcess.nbdNode("--tls", "on", "--tls-psk", keys.toString(),
                "--export", EXPORT + "=" + image)) {
            PeerCommand.Result plainIo = run("qemu-io", "-f", "raw", "-c", "write -P 0x19 0 64k", "-c", "read -P 0x19 0 64k",
                    "nbd://127.0.0.1:" + server.port() + "/" + EXPORT).assertSuccess();
            assertThat(plainIo.stdout()).doesNotContain("verification");
            String plain = run("nbdinfo", "nbd://127.0.0.1:" + server.port() + "/" + EXPORT).assertSuccess().stdout();
            assertThat(plain).contains("protocol: newstyle-fixed without TLS");

            String tls = run("nbdinfo", pskUri(server, "alice", keys)).assertSuccess().stdout();
            assertThat(tls).contains("protocol: newstyle-fixed with TLS");
            PeerCommand.Result tlsIo = run(qemuIo(server, pskObject(scratch.path(), "alice"), "read -P 0x19 0 64k"))
                    .assertSuccess();
            assertThat(tlsIo.stdout()).doesNotContain("verification");
            assertThat(countLines(server, "TLS established")).isEqualTo(2);
            assertNoKeyIn(server.log(), key);
        }
    }

    @Test
    void tlsOffRefusesStartTlsWithPolicy() throws Exception {
        try (ServerProcess server = ServerProcess.nbdNode("--tls", "off", "--export", EXPORT + "=" + image);
             RawNbd nbd = RawNbd.connect(server.port())) {
            nbd.option(OPT_STARTTLS, new byte[0]);
            OptionReply reply = nbd.reply();
            assertThat(reply.option()).isEqualTo(OPT_STARTTLS);
            assertThat(reply.type()).isEqualTo(REP_ERR_POLICY);
            // The connection stays in plaintext and usable.
            nbd.option(OPT_LIST, new byte[0]);
            assertThat(nbd.reply().type()).isEqualTo(REP_SERVER);
            assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
            PeerCommand.Result tls = run("nbdinfo", "nbds://127.0.0.1:" + server.port() + "/" + EXPORT);
            assertThat(tls.exitCode()).as("a libnbd client that requires TLS").isNotZero();
            run("nbdinfo", "nbd://127.0.0.1:" + server.port() + "/" + EXPORT).assertSuccess();
        }
    }

    @Test
    void x509StartTlsTwiceIsInvalid() throws Exception {
        try (ServerProcess server = x509Server(null);
             RawNbd nbd = RawNbd.connect(server.port())) {
            nbd.option(OPT_INFO, infoData(EXPORT));
            assertTlsRequired(nbd.reply(), OPT_INFO);
            nbd.option(OPT_STARTTLS, new byte[0]);
            assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
            String protocol = nbd.x509Handshake(pki.resolve("ca-cert.pem"), server.port());
            assertThat(protocol).isEqualTo("TLSv1.3");
            nbd.option(OPT_STARTTLS, new byte[0]);
            OptionReply again = nbd.reply();
            assertThat(again.option()).isEqualTo(OPT_STARTTLS);
            assertThat(again.type()).isEqualTo(REP_ERR_INVALID);
            nbd.option(OPT_LIST, new byte[0]);
            assertThat(nbd.reply().type()).isEqualTo(REP_SERVER);
            assertThat(nbd.reply().type()).isEqualTo(REP_ACK);

            // Plaintext where the ClientHello belongs (netty's SslHandler path).
            try (RawNbd plain = RawNbd.connect(server.port())) {
                plain.option(OPT_STARTTLS, new byte[0]);
                assertThat(plain.reply().type()).isEqualTo(REP_ACK);
                plain.option(OPT_LIST, new byte[0]);
                byte[] answer = plain.readUntilClosed(Duration.ofSeconds(5));
                assertThat(answer.length == 0 || answer[0] == 21).as("nothing or a TLS alert").isTrue();
            }
            waitFor(() -> server.log().contains("TLS handshake failed"), "the failed handshake in the log", server);
            run("nbdinfo", "--list", "nbds://127.0.0.1:" + server.port() + "/?tls-certificates=" + clientDir("c", "ca", null))
                    .assertSuccess();
            assertThat(server.log()).doesNotContain("Exception", "WARN");
        }
    }

    // ---- 4. Robustness

    @Test
    void plaintextAfterTheStartTlsAckClosesTheConnection() throws Exception {
        Path keys = scratch.resolve("keys.psk");
        String key = psk(keys, "alice");
        try (ServerProcess server = ServerProcess.nbdNode("--tls-psk", keys.toString(), "--export", EXPORT + "=" + image)) {
            try (RawNbd nbd = RawNbd.connect(server.port())) {
                nbd.option(OPT_STARTTLS, new byte[0]);
                assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
                nbd.option(OPT_LIST, new byte[0]); // plaintext where a ClientHello belongs
                byte[] answer = nbd.readUntilClosed(Duration.ofSeconds(5));
                // At most a TLS alert record (content type 21), never an option reply.
                if (answer.length > 0) {
                    assertThat(answer[0]).as("TLS alert record").isEqualTo((byte) 21);
                    assertThat(answer.length).isLessThanOrEqualTo(7);
                }
            }
            waitFor(() -> server.log().contains("TLS handshake failed"), "the failed handshake in the log", server);
            assertThat(server.log()).containsPattern("peer=127\\.0\\.0\\.1:\\d+ .*TLS handshake failed, disconnecting");
            run("nbdinfo", pskUri(server, "alice", keys)).assertSuccess();
            assertNoKeyIn(server.log(), key);
        }
    }

    @Test
    void aFloodAfterStartTlsIsCutOffWithoutMemoryGrowth() throws Exception {
        Path keys = scratch.resolve("keys.psk");
        String key = psk(keys, "alice");
        try (ServerProcess server = ServerProcess.nbdNode("--tls-psk", keys.toString(), "--export", EXPORT + "=" + image)) {
            run("nbdinfo", pskUri(server, "alice", keys)).assertSuccess(); // warm up the TLS code paths
            long rssBefore = rssKib(server);
            Random random = new Random(42);

            // Random garbage.
            Flood garbage = flood(server, (out, budget) -> {
                byte[] chunk = new byte[64 * 1024];
                for (long sent = 0; sent < budget; sent += chunk.length) {
                    random.nextBytes(chunk);
                    out.write(chunk);
                }
            });
            // Well-formed handshake records carrying one 16 MiB ClientHello that never ends.
            Flood hello = flood(server, (out, budget) -> {
                byte[] record = new byte[5 + 16384];
                for (long sent = 0; sent < budget; sent += record.length) {
                    random.nextBytes(record);
                    record[0] = 22; // handshake
                    record[1] = 3;
                    record[2] = 1;
                    record[3] = 0x40;
                    record[4] = 0;
                    if (sent == 0) {
                        record[5] = 1; // client_hello
                        record[6] = (byte) 0xff;
                        record[7] = (byte) 0xff;
                        record[8] = (byte) 0xff;
                    }
                    out.write(record);
                }
            });
            // Well-formed application data records before any handshake.
            Flood appData = flood(server, (out, budget) -> {
                byte[] record = new byte[5 + 16384];
                for (long sent = 0; sent < budget; sent += record.length) {
                    random.nextBytes(record);
                    record[0] = 23;
                    record[1] = 3;
                    record[2] = 3;
                    record[3] = 0x40;
                    record[4] = 0;
                    out.write(record);
                }
            });
            // Garbage inside an established session (Bouncy Castle PSK client, then raw bytes under it).
            Flood inSession;
            try (RawNbd nbd = RawNbd.connect(server.port())) {
                nbd.option(OPT_STARTTLS, new byte[0]);
                assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
                nbd.pskHandshake("alice", HexFormat.of().parseHex(key));
                nbd.option(OPT_LIST, new byte[0]);
                assertThat(nbd.reply().type()).isEqualTo(REP_SERVER);
                assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
                long start = System.nanoTime();
                CountingOutputStream counting = new CountingOutputStream(nbd.socket.getOutputStream());
                boolean refused = false;
                try {
                    byte[] record = new byte[5 + 16384];
                    for (long sent = 0; sent < 20L * MIB; sent += record.length) {
                        random.nextBytes(record);
                        record[0] = 23;
                        record[1] = 3;
                        record[2] = 3;
                        record[3] = 0x40;
                        record[4] = 0;
                        counting.write(record);
                    }
                } catch (IOException e) {
                    refused = true;
                }
                inSession = new Flood(counting.count, refused || nbd.closedWithin(Duration.ofSeconds(5)),
                        Duration.ofNanos(System.nanoTime() - start));
            }
            waitFor(() -> server.log().contains("TLS session failed"), "the failed session in the log", server);
            long rssAfter = rssKib(server);
            System.out.printf("floods: %s %s %s %s, VmRSS %d -> %d KiB%n", garbage, hello, appData, inSession,
                    rssBefore, rssAfter);

            for (Flood f : List.of(garbage, hello, appData, inSession)) {
                assertThat(f.closed()).as("closed by the server: %s", f).isTrue();
                assertThat(f.sent()).as("bytes taken before the hang-up: %s", f).isLessThan(20L * MIB);
                assertThat(f.took()).as("time to hang up: %s", f).isLessThan(Duration.ofSeconds(5));
            }
            assertThat(rssAfter - rssBefore).as("VmRSS growth in KiB (before %d KiB)", rssBefore)
                    .isLessThan(64 * 1024);
            waitFor(() -> countLines(server, "TLS handshake failed") >= 3, "three failed handshakes", server);
            run("nbdinfo", pskUri(server, "alice", keys)).assertSuccess();
            run(qemuImg(server, "info", pskObject(scratch.path(), "alice"))).assertSuccess();
            assertNoKeyIn(server.log(), key);
        }
    }

    @Test
    void silenceAfterStartTlsIsDroppedByTheHandshakeTimeout() throws Exception {
        Path keys = scratch.resolve("keys.psk");
        String key = psk(keys, "alice");
        try (ServerProcess server = ServerProcess.nbdNode("--handshake-timeout", "1", "--tls-psk", keys.toString(),
                "--export", EXPORT + "=" + image)) {
            try (RawNbd nbd = RawNbd.connect(server.port())) {
                long start = System.nanoTime();
                nbd.option(OPT_STARTTLS, new byte[0]);
                assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
                byte[] rest = nbd.readUntilClosed(Duration.ofSeconds(5));
                Duration took = Duration.ofNanos(System.nanoTime() - start);
                assertThat(took).isBetween(Duration.ofMillis(800), Duration.ofSeconds(3));
                assertThat(rest.length).as("nothing but maybe a close_notify alert").isLessThanOrEqualTo(7);
            }
            waitFor(() -> server.log().contains("handshake not finished"), "the timeout in the log", server);
            run("nbdinfo", pskUri(server, "alice", keys)).assertSuccess();
            assertNoKeyIn(server.log(), key);
        }
    }

    // ---- 5. Rotation

    @Test
    void pskRotationByRename() throws Exception {
        // Variant 1: a new file renamed over keys.psk.
        Path keys = scratch.resolve("keys.psk");
        rotatePsk(keys, keys, target -> {
            Path temp = scratch.resolve("keys.psk.tmp");
            Files.copy(target, temp);
            Files.move(temp, keys, StandardCopyOption.ATOMIC_MOVE);
        });
    }

    @Test
    void pskRotationByKubernetesSymlinkSwap() throws Exception {
        // Variant 2: the layout of a Secret volume: keys.psk -> ..data/keys.psk, ..data -> ..TIMESTAMP.
        Path volume = scratch.resolve("secret");
        Path first = volume.resolve("..2026_01_01_00_00_00.1");
        Files.createDirectories(first);
        Files.createSymbolicLink(volume.resolve("..data"), first.getFileName());
        Path keys = volume.resolve("keys.psk");
        Files.createSymbolicLink(keys, Path.of("..data", "keys.psk"));
        rotatePsk(keys, first.resolve("keys.psk"), target -> {
            Path second = volume.resolve("..2026_01_01_00_05_00.2");
            Files.createDirectories(second);
            Files.copy(target, second.resolve("keys.psk"));
            Path tmpLink = volume.resolve("..data_tmp");
            Files.createSymbolicLink(tmpLink, second.getFileName());
            Files.move(tmpLink, volume.resolve("..data"), StandardCopyOption.ATOMIC_MOVE);
            Files.delete(first.resolve("keys.psk"));
            Files.delete(first);
        });
    }

    private interface Rotation {
        void replaceWith(Path newKeys) throws IOException;
    }

    /**
     * Serves {@code keys} (alice = K1, written at {@code realFile}), keeps a libnbd session open,
     * rotates to K2 and checks who gets in afterwards.
     */
    private void rotatePsk(Path keys, Path realFile, Rotation rotation) throws Exception {
        Path k1Dir = scratch.resolve("k1");
        Path k2Dir = scratch.resolve("k2");
        Files.createDirectories(k1Dir);
        Files.createDirectories(k2Dir);
        String k1 = psk(k1Dir.resolve("keys.psk"), "alice");
        String k2 = psk(k2Dir.resolve("keys.psk"), "alice");
        Files.copy(k1Dir.resolve("keys.psk"), realFile);
        Path script = scratch.resolve("session.py");
        Files.writeString(script, """
                import sys, nbd
                h = nbd.NBD()
                h.set_tls(nbd.TLS_REQUIRE)
                h.set_tls_username("alice")
                h.set_tls_psk_file(sys.argv[1])
                h.set_export_name(sys.argv[3])
                h.connect_tcp("127.0.0.1", sys.argv[2])
                h.pwrite(b"\\x42" * 65536, 0)
                print("connected", h.get_tls_negotiated(), flush=True)
                sys.stdin.readline()
                h.pwrite(b"\\x43" * 4096, 1048576)
                h.flush()
                print("after", h.pread(65536, 0) == b"\\x42" * 65536, h.pread(4096, 1048576) == b"\\x43" * 4096, flush=True)
                h.shutdown()
                """);
        assertThat(Path.of(PYTHON)).isExecutable();
        try (ServerProcess server = ServerProcess.nbdNode("--tls-psk", keys.toString(), "--export", EXPORT + "=" + image)) {
            run(qemuImg(server, "info", pskObject(k1Dir, "alice"))).assertSuccess();
            Process session = new ProcessBuilder(PYTHON, script.toString(), k1Dir.resolve("keys.psk").toString(),
                    String.valueOf(server.port()), EXPORT).redirectError(scratch.resolve("session.err").toFile()).start();
            try {
                BufferedReader out = new BufferedReader(new InputStreamReader(session.getInputStream(), StandardCharsets.UTF_8));
                assertThat(readLine(out, session)).isEqualTo("connected True");

                rotation.replaceWith(k2Dir.resolve("keys.psk"));
                Thread.sleep(2500); // past the 2 s between checks of the file

                run(qemuImg(server, "info", pskObject(k2Dir, "alice"))).assertSuccess();
                assertThat(server.log()).contains("TLS credentials reloaded");
                PeerCommand.Result old = run(qemuImg(server, "info", pskObject(k1Dir, "alice")));
                assertThat(old.exitCode()).as("the old key after rotation").isNotZero();
                run("nbdinfo", pskUri(server, "alice", k2Dir.resolve("keys.psk"))).assertSuccess();
                assertThat(run("nbdinfo", pskUri(server, "alice", k1Dir.resolve("keys.psk"))).exitCode()).isNotZero();

                // The session opened with K1 goes on.
                Writer in = new java.io.OutputStreamWriter(session.getOutputStream(), StandardCharsets.UTF_8);
                in.write("go\n");
                in.flush();
                assertThat(readLine(out, session)).isEqualTo("after True True");
                assertThat(session.waitFor(10, TimeUnit.SECONDS)).isTrue();
                assertThat(session.exitValue()).as(Files.readString(scratch.resolve("session.err"))).isZero();
            } finally {
                if (session.isAlive()) {
                    session.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
                }
            }
            assertThat(ScratchDir.readAt(image, MIB, 4096)).containsOnly(0x43);
            assertThat(countLines(server, "TLS credentials reloaded")).isEqualTo(1);
            assertNoKeyIn(server.log(), k1, k2);
        }
    }

    @Test
    void x509CertificateRotation() throws Exception {
        // The server starts with a certificate from CA 1 and is given one from CA 2 (a new CA, serial and CN).
        makeCa(scratch.path(), "ca2", "second CA");
        makeCert(scratch.path(), "ca2", "server2", "cn = localhost\nip_address = 127.0.0.1\ndns_name = localhost\n"
                + "tls_www_server\nencryption_key\nsigning_key\n");
        Path certs = scratch.resolve("server-certs");
        Files.createDirectories(certs);
        Files.copy(pki.resolve("server-cert.pem"), certs.resolve("cert.pem"));
        Files.copy(pki.resolve("server-key.pem"), certs.resolve("key.pem"));
        Path ca1Client = clientDir("ca1-client", "ca", null);
        Path ca2Dir = scratch.resolve("ca2-client");
        Files.createDirectories(ca2Dir);
        Files.copy(scratch.resolve("ca2-cert.pem"), ca2Dir.resolve("ca-cert.pem"));

        try (ServerProcess server = ServerProcess.nbdNode("--tls-cert", certs.resolve("cert.pem").toString(),
                "--tls-key", certs.resolve("key.pem").toString(), "--export", EXPORT + "=" + image)) {
            run(qemuImg(server, "info", x509Object(ca1Client))).assertSuccess();
            assertThat(run(qemuImg(server, "info", x509Object(ca2Dir))).exitCode()).isNotZero();

            replace(scratch.resolve("server2-key.pem"), certs.resolve("key.pem"));
            replace(scratch.resolve("server2-cert.pem"), certs.resolve("cert.pem"));
            Thread.sleep(2500);

            run(qemuImg(server, "info", x509Object(ca2Dir))).assertSuccess();
            assertThat(server.log()).contains("TLS credentials reloaded");
            assertThat(run(qemuImg(server, "info", x509Object(ca1Client))).exitCode()).as("CA 1 after rotation").isNotZero();
            run("nbdinfo", "nbds://127.0.0.1:" + server.port() + "/" + EXPORT + "?tls-certificates=" + ca2Dir).assertSuccess();
            assertThat(server.log()).doesNotContain("PRIVATE KEY");
        }
    }

    // ---- raw NBD over a socket

    private record OptionReply(int option, int type, byte[] data) {}

    private static void assertTlsRequired(OptionReply reply, int option) {
        assertThat(reply.option()).isEqualTo(option);
        assertThat(reply.type()).as("reply type 0x%08x", reply.type()).isEqualTo(REP_ERR_TLS_REQD);
        assertThat(new String(reply.data(), StandardCharsets.ISO_8859_1)).doesNotContain(EXPORT);
    }

    private static byte[] infoData(String name) {
        byte[] bytes = name.getBytes(StandardCharsets.UTF_8);
        byte[] data = new byte[4 + bytes.length + 2];
        java.nio.ByteBuffer.wrap(data).putInt(bytes.length).put(bytes).putShort((short) 0);
        return data;
    }

    /** A fixed-newstyle client whose streams may be swapped for TLS ones after STARTTLS. */
    private static final class RawNbd implements AutoCloseable {
        private final Socket socket;
        private DataInputStream in;
        private DataOutputStream out;
        private AutoCloseable tls;

        private RawNbd(Socket socket) throws IOException {
            this.socket = socket;
            this.in = new DataInputStream(socket.getInputStream());
            this.out = new DataOutputStream(socket.getOutputStream());
        }

        static RawNbd connect(int port) throws IOException {
            Socket socket = new Socket();
            socket.connect(new InetSocketAddress("127.0.0.1", port), 2000);
            socket.setSoTimeout(10_000);
            RawNbd nbd = new RawNbd(socket);
            assertThat(nbd.in.readLong()).isEqualTo(NBDMAGIC);
            assertThat(nbd.in.readLong()).isEqualTo(IHAVEOPT);
            assertThat(nbd.in.readUnsignedShort() & 1).as("FIXED_NEWSTYLE").isEqualTo(1);
            nbd.out.writeInt(3); // FIXED_NEWSTYLE | NO_ZEROES
            nbd.out.flush();
            return nbd;
        }

        void option(int code, byte[] data) throws IOException {
            out.writeLong(IHAVEOPT);
            out.writeInt(code);
            out.writeInt(data.length);
            out.write(data);
            out.flush();
        }

        OptionReply reply() throws IOException {
            assertThat(in.readLong()).as("option reply magic").isEqualTo(REPLY_MAGIC);
            int option = in.readInt();
            int type = in.readInt();
            int length = in.readInt();
            assertThat(length).isBetween(0, 1 << 20);
            byte[] data = new byte[length];
            in.readFully(data);
            return new OptionReply(option, type, data);
        }

        void pskHandshake(String identity, byte[] key) throws IOException {
            TlsClientProtocol protocol = new TlsClientProtocol(socket.getInputStream(), socket.getOutputStream());
            protocol.connect(new PSKTlsClient(new BcTlsCrypto(new SecureRandom()), new BasicTlsPSKIdentity(identity, key)));
            tls = protocol::close;
            in = new DataInputStream(protocol.getInputStream());
            out = new DataOutputStream(protocol.getOutputStream());
        }

        String x509Handshake(Path caCert, int port) throws Exception {
            KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
            trust.load(null, null);
            try (InputStream pem = Files.newInputStream(caCert)) {
                trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(pem));
            }
            TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(trust);
            SSLContext context = SSLContext.getInstance("TLS");
            context.init(null, tmf.getTrustManagers(), new SecureRandom());
            SSLSocket ssl = (SSLSocket) context.getSocketFactory().createSocket(socket, "127.0.0.1", port, true);
            ssl.startHandshake();
            tls = ssl;
            in = new DataInputStream(ssl.getInputStream());
            out = new DataOutputStream(ssl.getOutputStream());
            return ssl.getSession().getProtocol();
        }

        /** True if the server hangs up (EOF or reset) within {@code limit}. */
        boolean closedWithin(Duration limit) throws IOException {
            return readUntilClosed(limit) != null;
        }

        /** What arrives until the server hangs up; fails if it does not within {@code limit}. */
        byte[] readUntilClosed(Duration limit) throws IOException {
            socket.setSoTimeout((int) limit.toMillis());
            java.io.ByteArrayOutputStream seen = new java.io.ByteArrayOutputStream();
            InputStream raw = socket.getInputStream();
            byte[] buffer = new byte[4096];
            try {
                int n;
                while ((n = raw.read(buffer)) >= 0) {
                    seen.write(buffer, 0, n);
                }
            } catch (SocketTimeoutException e) {
                throw new AssertionError("the server kept the connection open for " + limit, e);
            } catch (IOException e) {
                // a reset is a hang-up too
            }
            return seen.toByteArray();
        }

        @Override
        public void close() throws Exception {
            if (tls != null) {
                try {
                    tls.close();
                } catch (Exception e) {
                    // the server may be gone already
                }
            }
            socket.close();
        }
    }

    // ---- floods

    private interface Sender {
        void send(OutputStream out, long budget) throws IOException;
    }

    private record Flood(long sent, boolean closed, Duration took) {}

    /** STARTTLS, then up to 20 MiB from {@code sender}; reports what the server let through. */
    private static Flood flood(ServerProcess server, Sender sender) throws Exception {
        try (RawNbd nbd = RawNbd.connect(server.port())) {
            nbd.option(OPT_STARTTLS, new byte[0]);
            assertThat(nbd.reply().type()).isEqualTo(REP_ACK);
            long start = System.nanoTime();
            CountingOutputStream counting = new CountingOutputStream(nbd.socket.getOutputStream());
            boolean refused = false;
            try {
                sender.send(counting, 20L * MIB);
            } catch (IOException e) {
                refused = true; // reset or broken pipe: the server hung up
            }
            boolean closed = refused || nbd.closedWithin(Duration.ofSeconds(5));
            return new Flood(counting.count, closed, Duration.ofNanos(System.nanoTime() - start));
        }
    }

    private static final class CountingOutputStream extends java.io.FilterOutputStream {
        long count;

        CountingOutputStream(OutputStream out) {
            super(out);
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            out.write(b, off, len);
            count += len;
        }
    }

    private static long rssKib(ServerProcess server) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc", String.valueOf(server.process().pid()), "status"))) {
            if (line.startsWith("VmRSS:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        throw new AssertionError("no VmRSS for the server");
    }

    // ---- credentials

    /** Writes a new key for {@code identity} with psktool; returns its hex. */
    private static String psk(Path file, String identity) throws Exception {
        run("psktool", "-u", identity, "-p", file.toString()).assertSuccess();
        String line = Files.readString(file).lines().filter(l -> l.startsWith(identity + ":")).findFirst().orElseThrow();
        return line.substring(identity.length() + 1).strip();
    }

    private static void assertNoKeyIn(String log, String... keys) {
        for (String key : keys) {
            assertThat(key).hasSizeGreaterThanOrEqualTo(32);
            assertThat(log).doesNotContain(key.toLowerCase(Locale.ROOT), key.toUpperCase(Locale.ROOT),
                    key.substring(0, 16).toLowerCase(Locale.ROOT), key.substring(key.length() - 16).toLowerCase(Locale.ROOT));
        }
    }

    private static void makeCa(Path dir, String name, String cn) throws Exception {
        CertTool.ca(dir, name, cn);
    }

    private static void makeCert(Path dir, String ca, String name, String template) throws Exception {
        CertTool.cert(dir, name, Files.exists(dir.resolve(ca + "-cert.pem")) ? dir : pki.path(), ca, template);
    }

    /** A directory in qemu's and libnbd's layout: ca-cert.pem and, if {@code client} is given, client-cert/key.pem. */
    private Path clientDir(String name, String ca, String client) throws IOException {
        Path dir = scratch.resolve(name);
        Files.createDirectories(dir);
        Path caDir = Files.exists(scratch.resolve(ca + "-cert.pem")) ? scratch.path() : pki.path();
        Files.copy(caDir.resolve(ca + "-cert.pem"), dir.resolve("ca-cert.pem"));
        if (client != null) {
            Files.copy(pki.resolve(client + "-cert.pem"), dir.resolve("client-cert.pem"));
            Files.copy(pki.resolve(client + "-key.pem"), dir.resolve("client-key.pem"));
        }
        return dir;
    }

    private ServerProcess x509Server(Path clientCa) throws IOException, InterruptedException {
        List<String> args = new ArrayList<>(List.of("--tls-cert", pki.resolve("server-cert.pem").toString(),
                "--tls-key", pki.resolve("server-key.pem").toString()));
        if (clientCa != null) {
            args.addAll(List.of("--tls-ca", clientCa.toString()));
        }
        args.addAll(List.of("--export", EXPORT + "=" + image));
        return ServerProcess.nbdNode(args.toArray(String[]::new));
    }

    /** Copies {@code source} next to {@code target} and renames it over, as an atomic update does. */
    private static void replace(Path source, Path target) throws IOException {
        Path temp = target.resolveSibling(target.getFileName() + ".tmp");
        Files.copy(source, temp, StandardCopyOption.REPLACE_EXISTING);
        Files.move(temp, target, StandardCopyOption.ATOMIC_MOVE);
    }

    // ---- peers

    private static String pskObject(Path dir, String identity) {
        return "tls-creds-psk,id=tls0,endpoint=client,dir=" + dir + ",username=" + identity;
    }

    private static String x509Object(Path dir) {
        return "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir;
    }

    private static String pskUri(ServerProcess server, String identity, Path keys) {
        return "nbds://" + identity + "@127.0.0.1:" + server.port() + "/" + EXPORT + "?tls-psk-file=" + keys;
    }

    private static List<String> qemuImg(ServerProcess server, String subcommand, String object) {
        return List.of("qemu-img", subcommand, "--object", object, "--image-opts",
                "driver=nbd,host=127.0.0.1,port=" + server.port() + ",export=" + EXPORT + ",tls-creds=tls0");
    }

    private static List<String> qemuIo(ServerProcess server, String object, String... commands) {
        List<String> command = new ArrayList<>(List.of("qemu-io", "--object", object));
        for (String c : commands) {
            command.addAll(List.of("-c", c));
        }
        command.addAll(List.of("--image-opts",
                "driver=nbd,host=127.0.0.1,port=" + server.port() + ",export=" + EXPORT + ",tls-creds=tls0"));
        return command;
    }

    private static PeerCommand.Result run(List<String> command) throws IOException, InterruptedException {
        return PeerCommand.run(LIMIT, command);
    }

    private static PeerCommand.Result run(String... command) throws IOException, InterruptedException {
        return PeerCommand.run(LIMIT, command);
    }

    private static long countLines(ServerProcess server, String text) throws IOException {
        return server.log().lines().filter(l -> l.contains(text)).count();
    }

    private static String readLine(BufferedReader reader, Process process) throws Exception {
        CompletableFuture<String> line = CompletableFuture.supplyAsync(() -> {
            try {
                return reader.readLine();
            } catch (IOException e) {
                return "read failed: " + e;
            }
        });
        try {
            return line.get(15, TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            process.destroyForcibly();
            throw new AssertionError("the libnbd session said nothing for 15 s", e);
        }
    }

    private interface Condition {
        boolean holds() throws Exception;
    }

    private static void waitFor(Condition condition, String what, ServerProcess server) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(5).toNanos();
        while (!condition.holds()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("waited 5 s for " + what + "; server log:\n" + server.log());
            }
            Thread.sleep(50);
        }
    }
}
