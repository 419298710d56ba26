package io.kubenbd.node.server;

import static io.kubenbd.node.testing.NbdNodeJar.jar;
import static io.kubenbd.node.testing.NbdNodeJar.java;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.client.OptionRefusedException;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** {@code nbd-node serve} as a process: signals, configuration, argument errors, connection limits. */
class ServeCommandIT {
    private static final Duration LIMIT = Duration.ofSeconds(30);
    private static final String PYTHON = "/usr/bin/python3";

    private ScratchDir scratch;

    @BeforeEach
    void createScratch() throws IOException {
        scratch = ScratchDir.create("kube-nbd-serve-");
    }

    @AfterEach
    void deleteScratch() throws IOException {
        scratch.close();
    }

    @Test
    void sigtermDuringAWriteLoadExitsZeroPromptly() throws Exception {
        PeerCommand.requireInstalled("fio");
        Path image = scratch.sparseFile("disk.img", 64L << 20);
        Path fioOutput = scratch.resolve("fio.txt");
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image)) {
            Process fio = new ProcessBuilder("fio", "--ioengine=nbd", "--uri=" + server.uri("disk"),
                    "--name=load", "--rw=randwrite", "--bs=64k", "--iodepth=16", "--size=64M",
                    "--time_based", "--runtime=20")
                    .redirectErrorStream(true).redirectOutput(fioOutput.toFile()).start();
            try {
                waitFor(() -> server.log().contains("transmission:"), Duration.ofSeconds(10), "fio to connect");
                Thread.sleep(1000); // let writes pile up in flight

                long start = System.nanoTime();
                int exit = server.terminate(Duration.ofSeconds(10));
                Duration took = Duration.ofNanos(System.nanoTime() - start);

                assertThat(exit).as(server.log()).isZero();
                assertThat(took).as("SIGTERM to exit").isLessThan(Duration.ofSeconds(5));
                assertThat(server.log()).contains("shutting down", "shutdown complete").doesNotContain("Exception");
                assertThat(fio.waitFor(10, TimeUnit.SECONDS)).as("fio notices the server is gone").isTrue();
            } finally {
                if (fio.isAlive()) {
                    fio.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
                }
            }
        }
    }

    @Test
    void configFileServesItsExportsOnItsPort() throws Exception {
        PeerCommand.requireInstalled("qemu-nbd", "nbdinfo");
        Path disk = scratch.sparseFile("disk.img", 16L << 20);
        Path ro = scratch.sparseFile("ro.img", 4L << 20);
        Path config = scratch.resolve("serve.yaml");
        try (ServerProcess server = ServerProcess.nbdNodeWith(port -> {
            write(config, """
                    bind: 127.0.0.1
                    port: %d
                    exports:
                      - name: disk
                        path: %s
                        description: From YAML, with a comma
                        max-connections: 4
                      - name: ro
                        path: %s
                        readonly: true
                        max-connections: 1
                    """.formatted(port, disk, ro));
            return List.of("--config", config.toString());
        })) {
            List<String> list = run("qemu-nbd", "--list", "-b", "127.0.0.1", "-p", String.valueOf(server.port()))
                    .assertSuccess().stdout().lines().toList();
            assertThat(list).contains("exports available: 2", " export: 'disk'",
                    "  description: From YAML, with a comma", "  size:  16777216", " export: 'ro'", "  size:  4194304");
            String diskInfo = run("nbdinfo", server.uri("disk")).assertSuccess().stdout();
            assertThat(diskInfo).contains("is_read_only: false", "can_multi_conn: true");
            String roInfo = run("nbdinfo", server.uri("ro")).assertSuccess().stdout();
            assertThat(roInfo).contains("is_read_only: true", "can_multi_conn: false", "can_trim: false");
            assertThat(server.log()).contains("listening on /127.0.0.1:" + server.port());
        }
    }

    @Test
    void badExportSpecsFailWithOneLineAndExitTwo() throws Exception {
        Path image = scratch.sparseFile("disk.img", 1 << 20);
        for (List<String> args : List.<List<String>>of(
                List.of("--export", "noequals"),
                List.of("--export", "disk=" + image + ",readonly=maybe"),
                List.of("--export", "disk=" + image + ",max-connections=0"),
                List.of("--export", "disk=" + image + ",readonly,colour=blue"),
                List.of("--export", "disk=" + image, "--export", "disk=" + image),
                List.of("--export", "disk=" + image, "--write-timeout", "0"),
                List.of("--export", "disk=" + image, "--buffer-budget", "0"),
                List.of("--export", "disk=" + image, "--max-handshakes-per-peer", "0"),
                List.of())) {
            PeerCommand.Result result = serve(args);
            assertThat(result.exitCode()).as("%s: %s", args, result.stderr()).isEqualTo(2);
            assertOneLineError(result);
        }
        PeerCommand.Result result = serve(List.of("--export", "noequals"));
        assertThat(result.stderr().strip()).isEqualTo("nbd-node: --export 'noequals': expected NAME=PATH[,key=value...]");
        assertThat(serve(List.of("--export", "disk=" + image + ",readonly,colour=blue")).stderr())
                .contains("unknown key 'colour'");
        assertThat(serve(List.of("--export", "disk=" + image, "--export", "disk=" + image)).stderr())
                .contains("'disk' is configured twice");
    }

    @Test
    void runningOutOfBufferMemoryFailsTheRequestNotTheConnection() throws Exception {
        Path image = scratch.sparseFile("disk.img", 64L << 20);
        try (ServerProcess server = ServerProcess.nbdNodeWith(List.of("-XX:MaxDirectMemorySize=24m"),
                port -> List.of("--bind", "127.0.0.1", "--port", String.valueOf(port), "--export", "disk=" + image));
             NbdClient client = NbdClient.connect("127.0.0.1", server.port(), LIMIT)) {
            client.go("disk");
            // 32 MiB is a legal read, but its buffer cannot fit in 24 MiB of direct memory.
            var reply = client.call(io.kubenbd.node.protocol.CommandType.READ, 0, 0, 32 << 20, null);
            assertThat(reply.error()).isEqualTo(io.kubenbd.node.protocol.NbdError.ENOMEM);
            assertThat(client.read(4096, 4096)).hasSize(4096);
            assertThat(server.log()).contains("out of buffer memory");
        }
    }

    @Test
    void aMissingImageFailsNamingThePath() throws Exception {
        Path missing = scratch.resolve("no-such-dir").resolve("disk.img");
        PeerCommand.Result result = serve(List.of("--export", "disk=" + missing));
        assertThat(result.exitCode()).isEqualTo(1);
        assertOneLineError(result);
        assertThat(result.stderr()).contains(missing.toString(), "No such file or directory");
    }

    @Test
    void aPortInUseFailsWithAClearMessage() throws Exception {
        Path image = scratch.sparseFile("disk.img", 1 << 20);
        try (ServerProcess first = ServerProcess.nbdNode("--export", "disk=" + image)) {
            PeerCommand.Result second = PeerCommand.run(LIMIT, java(), "-jar", jar(), "serve", "--bind", "127.0.0.1",
                    "--port", String.valueOf(first.port()), "--export", "disk=" + image);
            assertThat(second.exitCode()).isEqualTo(1);
            assertOneLineError(second);
            assertThat(second.stderr()).contains("cannot listen on 127.0.0.1:" + first.port(), "Address already in use");
            assertThat(first.process().isAlive()).isTrue();
        }
    }

    @Test
    void aThirdClientIsRefusedAtMaxConnectionsTwo() throws Exception {
        assertThat(Path.of(PYTHON)).as("the python3 that has libnbd's bindings").isExecutable();
        Path image = scratch.sparseFile("disk.img", 1 << 20);
        Path script = scratch.resolve("limit.py");
        Files.writeString(script, """
                import sys, time
                import nbd
                uri = sys.argv[1]
                def connect():
                    h = nbd.NBD()
                    h.connect_uri(uri)
                    return h
                first, second = connect(), connect()
                try:
                    connect()
                    print("third connected")
                except nbd.Error as e:
                    print("third refused:", e.string)
                first.pwrite(b"a" * 4096, 0)
                print("first works", second.pread(4096, 0) == b"a" * 4096)
                print("second works", second.pread(512, 4096) == bytes(512))
                first.shutdown()
                del first
                fourth = None
                for _ in range(50):
                    try:
                        fourth = connect()
                        break
                    except nbd.Error:
                        time.sleep(0.1)
                print("slot freed", fourth is not None and fourth.pread(4096, 0) == b"a" * 4096)
                """);
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image + ",max-connections=2")) {
            List<String> out = run(PYTHON, script.toString(), server.uri("disk")).assertSuccess().stdout().lines().toList();
            assertThat(out).hasSize(4);
            // libnbd 1.14 names the refusal (NBD_REP_ERR_POLICY) but not the server's text.
            assertThat(out.get(0)).isEqualTo("third refused: nbd_connect_uri: handshake: server policy prevents NBD_OPT_GO");
            assertThat(out.subList(1, 4)).containsExactly("first works True", "second works True", "slot freed True");
            assertThat(server.log()).contains("export=disk");

            // The project's own client shows the server's text.
            try (NbdClient first = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(5));
                 NbdClient second = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(5));
                 NbdClient third = NbdClient.connect("127.0.0.1", server.port(), Duration.ofSeconds(5))) {
                for (NbdClient client : List.of(first, second, third)) {
                    client.negotiateBestReplies();
                }
                first.go("disk");
                second.go("disk");
                assertThatThrownBy(() -> third.go("disk"))
                        .isInstanceOf(OptionRefusedException.class)
                        .hasMessageContaining("export 'disk' already has its maximum of 2 connections");
                assertThat(first.read(0, 4096)).containsOnly('a');
                assertThat(second.read(4096, 512)).containsOnly(0);
            }
        }
    }

    @Test
    void aSilentClientIsDroppedAfterTheHandshakeTimeout() throws Exception {
        Path image = scratch.sparseFile("disk.img", 1 << 20);
        try (ServerProcess server = ServerProcess.nbdNode("--handshake-timeout", "1", "--export", "disk=" + image);
             Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress("127.0.0.1", server.port()), 2000);
            socket.setSoTimeout(5000);
            long start = System.nanoTime();
            DataInputStream in = new DataInputStream(socket.getInputStream());
            assertThat(in.readLong()).as("NBDMAGIC").isEqualTo(0x4e42444d41474943L);
            assertThat(in.readLong()).as("IHAVEOPT").isEqualTo(0x49484156454F5054L);
            in.readUnsignedShort();
            int next;
            try {
                next = readOrReset(in);
            } catch (SocketTimeoutException e) {
                throw new AssertionError("the server kept a silent client for 5 s", e);
            }
            Duration took = Duration.ofNanos(System.nanoTime() - start);
            assertThat(next).as("end of stream").isEqualTo(-1);
            assertThat(took).isBetween(Duration.ofMillis(800), Duration.ofSeconds(3));
            waitFor(() -> server.log().contains("handshake not finished"), Duration.ofSeconds(3), "the log line");

            // The server itself is fine: a real client still gets in.
            PeerCommand.requireInstalled("nbdinfo");
            assertThat(run("nbdinfo", "--size", server.uri("disk")).assertSuccess().stdout().strip())
                    .isEqualTo(String.valueOf(1 << 20));
        }
    }

    // ---- helpers

    private static int readOrReset(InputStream in) throws IOException {
        try {
            return in.read();
        } catch (SocketTimeoutException e) {
            throw e;
        } catch (IOException e) {
            return -1; // a reset is a drop too
        }
    }

    private static void assertOneLineError(PeerCommand.Result result) {
        assertThat(result.stderr().strip().lines()).as(result.stderr()).hasSize(1)
                .allMatch(l -> l.startsWith("nbd-node: "));
        assertThat(result.stderr() + result.stdout()).doesNotContain("\tat ", "Exception");
    }

    private static PeerCommand.Result serve(List<String> args) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of(java(), "-jar", jar(), "serve", "--bind", "127.0.0.1",
                "--port", "0"));
        command.addAll(args);
        return PeerCommand.run(LIMIT, command);
    }

    private static PeerCommand.Result run(String... command) throws IOException, InterruptedException {
        return PeerCommand.run(LIMIT, command);
    }

    private static void write(Path file, String text) {
        try {
            Files.writeString(file, text);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private interface Condition {
        boolean holds() throws Exception;
    }

    private static void waitFor(Condition condition, Duration limit, String what) throws Exception {
        long deadline = System.nanoTime() + limit.toNanos();
        while (!condition.holds()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("waited " + limit + " for " + what);
            }
            Thread.sleep(50);
        }
    }


}
