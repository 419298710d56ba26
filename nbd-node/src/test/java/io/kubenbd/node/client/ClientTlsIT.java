package io.kubenbd.node.client;

import static io.kubenbd.node.testing.NbdNodeJar.jar;
import static io.kubenbd.node.testing.NbdNodeJar.java;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.kubenbd.node.protocol.Magic;
import io.kubenbd.node.protocol.OptionReplyType;
import io.kubenbd.node.protocol.OptionType;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.tls.ClientTlsCredentials;
import io.kubenbd.node.tls.NegotiatedTls;
import io.kubenbd.node.tls.PskKey;
import io.kubenbd.node.tls.PskKeyFile;
import io.kubenbd.node.tls.PskTlsClientEndpoint;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.bouncycastle.tls.CipherSuite;
import org.bouncycastle.tls.ProtocolVersion;
import org.bouncycastle.tls.TlsClientProtocol;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Our NBD client's STARTTLS against qemu-nbd 10 (GnuTLS) as the TLS server: TLS-PSK with a
 * psktool key file, X.509 with certificates made by openssl, and {@code nbd-node list nbds://}
 * against {@code qemu-nbd --list} over TLS.
 */
class ClientTlsIT {
    private static final Duration LIMIT = Duration.ofSeconds(60);
    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    private static final int MIB = 1 << 20;

    private ScratchDir scratch;
    private Path image;

    @BeforeEach
    void createScratch() throws IOException {
        scratch = ScratchDir.create("kube-nbd-client-tls-");
        image = scratch.sparseFile("disk.img", 16L * MIB);
    }

    @AfterEach
    void deleteScratch() throws IOException {
        scratch.close();
    }

    // ------------------------------------------------------------------ TLS-PSK

    @Test
    void pskStartTlsThenGoReadsAndWritesOverTls13AesGcm() throws Exception {
        Path keys = pskDir("server", "alice");
        try (ServerProcess qemu = qemuPsk(keys.getParent());
             NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
            NegotiatedTls tls = client.startTls(ClientTlsCredentials.Psk.fromFile(keys, "alice"));
            assertThat(tls).isEqualTo(new NegotiatedTls("TLSv1.3", "TLS_AES_128_GCM_SHA256"));
            assertThat(client.tls()).isEqualTo(tls);
            assertThat(client.style()).isEqualTo(ReplyStyle.SIMPLE);
            assertThat(client.negotiateBestReplies()).isEqualTo(ReplyStyle.EXTENDED);
            ExportInfo info = client.go("disk");
            assertThat(info.size()).isEqualTo(16L * MIB);

            byte[] data = random(3 * MIB + 512, 7);
            client.write(MIB + 4096, data, 0);
            client.flush();
            assertThat(client.read(MIB + 4096, data.length)).isEqualTo(data);
            assertThat(client.read(0, 4096)).isEqualTo(new byte[4096]);
            client.disconnect();
            assertThat(ScratchDir.readAt(image, MIB + 4096, data.length)).isEqualTo(data);
        }
    }

    @Test
    void pskIdentityComesFromASingleKeyFile() throws Exception {
        Path keys = pskDir("server", "alice");
        try (ServerProcess qemu = qemuPsk(keys.getParent());
             NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
            ClientTlsCredentials.Psk psk = ClientTlsCredentials.Psk.fromFile(keys, null);
            assertThat(psk.key().identity()).isEqualTo("alice");
            client.startTls(psk);
            assertThat(client.listExports()).extracting(e -> e.name()).containsExactly("disk");
        }
    }

    @Test
    void wrongKeyFailsTheHandshakeWithAClearMessage() throws Exception {
        Path serverKeys = pskDir("server", "alice");
        Path clientKeys = pskDir("client", "alice");
        PskKey wrong = PskKeyFile.read(clientKeys).find("alice").orElseThrow();
        assertThat(wrong).isNotEqualTo(PskKeyFile.read(serverKeys).find("alice").orElseThrow());
        try (ServerProcess qemu = qemuPsk(serverKeys.getParent());
             NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
            assertThatThrownBy(() -> client.startTls(new ClientTlsCredentials.Psk(wrong)))
                    .isInstanceOf(IOException.class)
                    .hasMessageStartingWith("TLS-PSK handshake with 127.0.0.1:" + qemu.port() + " as 'alice' failed: ")
                    // GnuTLS hangs up without an alert when the binder does not verify.
                    .hasMessageContaining("the server closed the connection without an alert (wrong key")
                    .satisfies(e -> assertNoKeyIn(e.getMessage(), wrong));
            // The connection is gone: nothing more can be said on it.
            assertThatThrownBy(client::listExports).isInstanceOf(IOException.class);
        }
    }

    @Test
    void unknownIdentityFailsTheHandshake() throws Exception {
        Path serverKeys = pskDir("server", "alice");
        Path bobKeys = pskDir("bob", "bob");
        try (ServerProcess qemu = qemuPsk(serverKeys.getParent());
             NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
            assertThatThrownBy(() -> client.startTls(ClientTlsCredentials.Psk.fromFile(bobKeys, "bob")))
                    .isInstanceOf(IOException.class)
                    .hasMessageContaining("handshake with 127.0.0.1:" + qemu.port() + " as 'bob' failed");
        }
    }

    @Test
    void plaintextGoIsAnsweredWithTlsRequiredAndStartTlsStillWorksAfterwards() throws Exception {
        Path keys = pskDir("server", "alice");
        try (ServerProcess qemu = qemuPsk(keys.getParent());
             NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
            assertThatThrownBy(() -> client.go("disk"))
                    .isInstanceOfSatisfying(OptionRefusedException.class,
                            e -> assertThat(e.replyType()).isEqualTo(OptionReplyType.ERR_TLS_REQD))
                    .hasMessageContaining("NBD_REP_ERR_TLS_REQD");
            assertThatThrownBy(client::listExports)
                    .isInstanceOfSatisfying(OptionRefusedException.class,
                            e -> assertThat(e.replyType()).isEqualTo(OptionReplyType.ERR_TLS_REQD));
            client.startTls(ClientTlsCredentials.Psk.fromFile(keys, "alice"));
            assertThat(client.go("disk").size()).isEqualTo(16L * MIB);
            assertThat(client.read(0, 512)).isEqualTo(new byte[512]);
        }
    }

    @Test
    void startTlsAgainstAServerWithoutTlsIsRefusedAndThePlaintextSessionGoesOn() throws Exception {
        Path keys = pskDir("client", "alice");
        try (ServerProcess qemu = ServerProcess.qemuNbd("disk", image);
             NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
            assertThatThrownBy(() -> client.startTls(ClientTlsCredentials.Psk.fromFile(keys, "alice")))
                    .isInstanceOfSatisfying(OptionRefusedException.class,
                            e -> assertThat(e.replyType()).isEqualTo(OptionReplyType.ERR_POLICY))
                    .hasMessageContaining("NBD_OPT_STARTTLS");
            assertThat(client.tls()).isNull();
            assertThat(client.go("disk").size()).isEqualTo(16L * MIB);
        }
    }

    /**
     * Which TLS 1.2 PSK suites GnuTLS (qemu's priority string) accepts, one at a time, and
     * which it picks from our default order when only TLS 1.2 is offered.
     */
    @Test
    void tls12PskSuitesThatQemuAccepts() throws Exception {
        Path keys = pskDir("server", "alice");
        PskKey key = PskKeyFile.read(keys).single();
        ProtocolVersion[] tls12 = ProtocolVersion.TLSv12.only();
        try (ServerProcess qemu = qemuPsk(keys.getParent())) {
            NegotiatedTls chosen = rawPskHandshake(qemu.port(), new PskTlsClientEndpoint(key, tls12,
                    PskTlsClientEndpoint.defaultCipherSuites()));
            assertThat(chosen.protocol()).isEqualTo("TLSv1.2");
            assertThat(chosen.cipherSuite()).endsWith("_PSK_WITH_AES_128_GCM_SHA256");

            Map<String, String> outcome = new LinkedHashMap<>();
            for (int suite : PskTlsClientEndpoint.defaultCipherSuites()) {
                String name = PskTlsClientEndpoint.cipherSuiteName(suite);
                if (!name.contains("_PSK_")) {
                    continue;
                }
                try {
                    NegotiatedTls one = rawPskHandshake(qemu.port(), new PskTlsClientEndpoint(key, tls12, suite));
                    assertThat(one.cipherSuite()).isEqualTo(name);
                    outcome.put(name, "accepted");
                } catch (IOException e) {
                    outcome.put(name, "refused: " + e.getMessage());
                }
            }
            System.out.println("TLS 1.2 PSK against qemu-nbd: default order picks " + chosen + "; one suite at a time: " + outcome);
            assertThat(outcome).containsEntry("TLS_DHE_PSK_WITH_AES_128_GCM_SHA256", "accepted")
                    .containsEntry("TLS_PSK_WITH_AES_128_GCM_SHA256", "accepted");

            NegotiatedTls chacha = rawPskHandshake(qemu.port(), new PskTlsClientEndpoint(key,
                    ProtocolVersion.TLSv13.only(), CipherSuite.TLS_CHACHA20_POLY1305_SHA256));
            assertThat(chacha).isEqualTo(new NegotiatedTls("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"));
        }
    }

    // ------------------------------------------------------------------ X.509

    @Test
    void x509WithTheRightCaAndAClientCertificateWorks() throws Exception {
        Pki pki = pki();
        try (ServerProcess qemu = qemuX509(pki.serverDir())) {
            for (String host : List.of("127.0.0.1", "localhost")) {
                try (NbdClient client = NbdClient.connect(host, qemu.port(), TIMEOUT)) {
                    NegotiatedTls tls = client.startTls(new ClientTlsCredentials.X509(pki.ca(), pki.clientCert(),
                            pki.clientKey(), true));
                    assertThat(tls.protocol()).isEqualTo("TLSv1.3");
                    assertThat(tls.cipherSuite()).startsWith("TLS_AES_");
                    client.negotiateBestReplies();
                    client.go("disk");
                    byte[] data = random(64 * 1024, 3);
                    client.write(0, data, 0);
                    assertThat(client.read(0, data.length)).isEqualTo(data);
                    client.disconnect();
                }
            }
        }
    }

    @Test
    void x509WithAnotherCaFails() throws Exception {
        Pki pki = pki();
        Path otherCa = makeCa(scratch.resolve("other"), "other-ca");
        try (ServerProcess qemu = qemuX509(pki.serverDir());
             NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
            assertThatThrownBy(() -> client.startTls(new ClientTlsCredentials.X509(otherCa, pki.clientCert(),
                    pki.clientKey(), true)))
                    .isInstanceOf(IOException.class)
                    .hasMessageStartingWith("TLS handshake with 127.0.0.1:" + qemu.port() + " failed: ")
                    .hasMessageContaining("PKIX");
        }
    }

    @Test
    void x509WithoutAClientCertificateIsRefusedByQemu() throws Exception {
        Pki pki = pki();
        try (ServerProcess qemu = qemuX509(pki.serverDir());
             NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
            // qemu's tls-creds-x509 server verifies peers by default. With TLS 1.3 the client
            // only learns after its Finished; the first read then fails.
            assertThatThrownBy(() -> {
                client.startTls(new ClientTlsCredentials.X509(pki.ca()));
                client.listExports();
            }).isInstanceOf(IOException.class);
        }
    }

    @Test
    void x509HostnameMustMatchTheCertificate() throws Exception {
        Pki pki = pki();
        Path otherName = scratch.resolve("other-name");
        Files.createDirectories(otherName);
        Files.copy(pki.ca(), otherName.resolve("ca-cert.pem"));
        issue(pki, otherName.resolve("server"), "elsewhere.example", "DNS:elsewhere.example", "serverAuth");
        try (ServerProcess qemu = qemuX509(otherName)) {
            try (NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
                assertThatThrownBy(() -> client.startTls(new ClientTlsCredentials.X509(pki.ca(), pki.clientCert(),
                        pki.clientKey(), true)))
                        .isInstanceOf(IOException.class)
                        .hasMessageContaining("127.0.0.1");
            }
            // The same certificate without the hostname check is accepted.
            try (NbdClient client = NbdClient.connect("127.0.0.1", qemu.port(), TIMEOUT)) {
                client.startTls(new ClientTlsCredentials.X509(pki.ca(), pki.clientCert(), pki.clientKey(), false));
                assertThat(client.listExports()).hasSize(1);
            }
        }
    }

    // ------------------------------------------------------------------ nbd-node list

    @Test
    void listNbdsPrintsWhatQemuNbdListPrintsOverTls() throws Exception {
        Path keys = pskDir("server", "alice");
        Path dir = keys.getParent();
        try (ServerProcess qemu = qemuPsk(dir)) {
            String port = String.valueOf(qemu.port());
            PeerCommand.Result ours = peer(java(), "-jar", jar(), "list",
                    "nbds://alice@127.0.0.1:" + port + "?tls-psk-file=" + keys);
            List<String> reference = peer("qemu-nbd", "--list",
                    "--object", "tls-creds-psk,id=tls0,endpoint=client,dir=" + dir + ",username=alice",
                    "--tls-creds", "tls0", "-b", "127.0.0.1", "-p", port).stdout().lines().toList();
            assertThat(reference).contains("exports available: 1", " export: 'disk'", "  size:  16777216");
            assertThat(ours.stdout().lines().toList()).containsExactlyElementsOf(reference);
            assertThat(ours.stderr()).contains("tls: TLSv1.3 TLS_AES_128_GCM_SHA256");

            List<String> withOptions = peer(java(), "-jar", jar(), "list", "--tls-psk", keys.toString(),
                    "--tls-username", "alice", "nbds://127.0.0.1:" + port).stdout().lines().toList();
            assertThat(withOptions).containsExactlyElementsOf(reference);

            PeerCommand.Result plain = PeerCommand.run(LIMIT, java(), "-jar", jar(), "list", "nbd://127.0.0.1:" + port);
            assertThat(plain.exitCode()).isNotZero();
            assertThat(plain.stderr()).contains("NBD_REP_ERR_TLS_REQD");
        }
    }

    @Test
    void listNbdsWithX509() throws Exception {
        Pki pki = pki();
        try (ServerProcess qemu = qemuX509(pki.serverDir())) {
            String port = String.valueOf(qemu.port());
            List<String> ours = peer(java(), "-jar", jar(), "list", "--tls-ca", pki.ca().toString(),
                    "--tls-cert", pki.clientCert().toString(), "--tls-key", pki.clientKey().toString(),
                    "nbds://localhost:" + port).stdout().lines().toList();
            assertThat(ours).contains("exports available: 1", " export: 'disk'", "  size:  16777216");
        }
    }

    @Test
    void listWithAWrongKeyExitsWithOneClearLine() throws Exception {
        Path serverKeys = pskDir("server", "alice");
        Path clientKeys = pskDir("client", "alice");
        try (ServerProcess qemu = qemuPsk(serverKeys.getParent())) {
            PeerCommand.Result result = PeerCommand.run(LIMIT, java(), "-jar", jar(), "list",
                    "nbds://alice@127.0.0.1:" + qemu.port() + "?tls-psk-file=" + clientKeys);
            assertThat(result.exitCode()).isNotZero();
            assertThat(result.stdout()).isEmpty();
            assertThat(result.stderr().strip()).startsWith("nbd-node: TLS-PSK handshake with 127.0.0.1:"
                    + qemu.port() + " as 'alice' failed: ").doesNotContain("\n").doesNotContain("Exception");
            assertNoKeyIn(result.stderr(), PskKeyFile.read(clientKeys).single());
        }
    }

    // ------------------------------------------------------------------ helpers

    /** DIR/keys.psk written by psktool for {@code identity}, DIR named {@code name}. */
    private Path pskDir(String name, String identity) throws Exception {
        PeerCommand.requireInstalled("psktool");
        Path dir = scratch.resolve(name);
        Files.createDirectories(dir);
        Path keys = dir.resolve("keys.psk");
        peer("psktool", "-u", identity, "-p", keys.toString());
        return keys;
    }

    private ServerProcess qemuPsk(Path dir) throws Exception {
        return ServerProcess.qemuNbd("disk", image, "--object",
                "tls-creds-psk,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0");
    }

    private ServerProcess qemuX509(Path dir) throws Exception {
        return ServerProcess.qemuNbd("disk", image, "--object",
                "tls-creds-x509,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0");
    }

    /** A CA, a server certificate for localhost/127.0.0.1 (in qemu's file names) and a client certificate. */
    private record Pki(Path serverDir, Path ca, Path caKey, Path clientCert, Path clientKey) {}

    private Pki pki() throws Exception {
        Path dir = scratch.resolve("pki");
        Files.createDirectories(dir);
        Path ca = makeCa(dir, "test-ca");
        Pki pki = new Pki(dir, ca, dir.resolve("ca-key.pem"), dir.resolve("client-cert.pem"), dir.resolve("client-key.pem"));
        issue(pki, dir.resolve("server"), "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth");
        issue(pki, dir.resolve("client"), "nbd-client", "DNS:nbd-client", "clientAuth");
        return pki;
    }

    private Path makeCa(Path dir, String name) throws Exception {
        PeerCommand.requireInstalled("openssl");
        Files.createDirectories(dir);
        Path cert = dir.resolve("ca-cert.pem");
        peer("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", dir.resolve("ca-key.pem").toString(), "-out", cert.toString(), "-days", "2",
                "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign");
        return cert;
    }

    /** PREFIX-cert.pem and PREFIX-key.pem (PKCS#8), signed by the Pki's CA. */
    private void issue(Pki pki, Path prefix, String cn, String san, String usage) throws Exception {
        Path key = Path.of(prefix + "-key.pem");
        Path csr = Path.of(prefix + ".csr");
        Path ext = Path.of(prefix + ".ext");
        Files.writeString(ext, "subjectAltName=" + san + "\nextendedKeyUsage=" + usage
                + "\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n");
        peer("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key.toString(), "-out", csr.toString(), "-subj", "/CN=" + cn);
        peer("openssl", "x509", "-req", "-in", csr.toString(), "-CA", pki.ca().toString(),
                "-CAkey", pki.caKey().toString(), "-CAcreateserial", "-days", "2", "-extfile", ext.toString(),
                "-out", prefix + "-cert.pem");
    }

    /** STARTTLS by hand, then a handshake with exactly this endpoint; returns what was agreed. */
    private static NegotiatedTls rawPskHandshake(int port, PskTlsClientEndpoint endpoint) throws IOException {
        try (Socket socket = new Socket("127.0.0.1", port)) {
            socket.setSoTimeout(10_000);
            DataInputStream in = new DataInputStream(socket.getInputStream());
            DataOutputStream out = new DataOutputStream(socket.getOutputStream());
            assertThat(in.readLong()).isEqualTo(Magic.NBDMAGIC);
            assertThat(in.readLong()).isEqualTo(Magic.IHAVEOPT);
            in.readUnsignedShort();
            out.writeInt(1); // NBD_FLAG_C_FIXED_NEWSTYLE
            out.writeLong(Magic.IHAVEOPT);
            out.writeInt(OptionType.STARTTLS);
            out.writeInt(0);
            out.flush();
            assertThat(in.readLong()).isEqualTo(Magic.OPTION_REPLY);
            assertThat(in.readInt()).isEqualTo(OptionType.STARTTLS);
            assertThat(in.readInt()).isEqualTo(OptionReplyType.ACK);
            in.skipNBytes(in.readInt());
            TlsClientProtocol protocol = new TlsClientProtocol(socket.getInputStream(), socket.getOutputStream());
            try {
                protocol.connect(endpoint);
            } catch (IOException e) {
                throw new IOException(endpoint.lastAlert() != null ? endpoint.lastAlert() : e.toString(), e);
            } finally {
                endpoint.wipe();
            }
            NegotiatedTls negotiated = endpoint.negotiated();
            protocol.close();
            return negotiated;
        }
    }

    private static void assertNoKeyIn(String text, PskKey key) {
        byte[] bytes = key.key();
        String hex = HexFormat.of().formatHex(bytes);
        assertThat(text.toLowerCase()).doesNotContain(hex).doesNotContain(hex.substring(0, 16));
    }

    private static PeerCommand.Result peer(String... command) throws IOException, InterruptedException {
        return PeerCommand.run(LIMIT, command).assertSuccess();
    }



    private static byte[] random(int length, long seed) {
        byte[] bytes = new byte[length];
        new Random(seed).nextBytes(bytes);
        return bytes;
    }
}
