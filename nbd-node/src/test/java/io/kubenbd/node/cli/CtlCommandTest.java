package io.kubenbd.node.cli;

import io.kubenbd.node.server.ControlAddress;
import io.kubenbd.node.server.ControlServer;
import io.kubenbd.node.server.ExportConfig;
import io.kubenbd.node.server.ExportRegistry;
import io.kubenbd.node.server.NbdServer;
import io.kubenbd.node.server.ServerSettings;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.RandomAccessFile;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** {@code nbd-node ctl} against a server's control API on a unix socket, as an operator types it. */
class CtlCommandTest {
    @TempDir
    Path dir;
    private NbdServer nbd;
    private ControlServer control;
    private Path socket;

    @BeforeEach
    void start() throws Exception {
        Path image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(8 << 20);
        }
        ExportRegistry registry = ExportRegistry.open(List.of(new ExportConfig("d", image, false, "", 2)));
        nbd = NbdServer.start(new InetSocketAddress("127.0.0.1", 0), registry, ServerSettings.defaults());
        socket = dir.resolve("control.sock");
        control = ControlServer.start(new ControlAddress.Unix(socket), registry);
    }

    @AfterEach
    void stop() {
        control.close();
        nbd.close();
    }

    /** Runs {@code ctl ARGS} and returns its exit code and what it printed on stdout and stderr. */
    private record Run(int exitCode, String out) {}

    private Run ctl(String... args) {
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        PrintStream previous = System.out;
        PrintStream capture = new PrintStream(captured, true, StandardCharsets.UTF_8);
        System.setOut(capture);
        try {
            var commandLine = NbdNodeCommand.commandLine();
            commandLine.setErr(new java.io.PrintWriter(capture, true));
            List<String> all = new java.util.ArrayList<>(List.of("ctl", "--control", "unix:" + socket));
            all.addAll(List.of(args));
            int code = commandLine.execute(all.toArray(String[]::new));
            return new Run(code, captured.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(previous);
        }
    }

    @Test
    void bitmapSubcommandsDriveTheWholeLifecycle() {
        assertThat(ctl("bitmap", "add", "d", "a", "--granularity", "1M").out())
                .contains("bitmap a  granularity 1048576  recording");
        assertThat(ctl("bitmap", "checkpoint", "d", "a", "b").out()).contains("bitmap b", "recording");
        assertThat(ctl("bitmap", "add", "d", "c").out()).contains("granularity 65536");
        assertThat(ctl("bitmap", "merge", "d", "c", "a", "b").exitCode()).isZero();
        assertThat(ctl("bitmap", "remove", "d", "b").out()).contains("removed bitmap b");
        assertThat(ctl("exports").out())
                .contains("bitmap a  granularity 1048576  frozen", "bitmap c  granularity 65536  recording",
                        "qemu:dirty-bitmap:a")
                .doesNotContain("bitmap b ");
        assertThat(ctl("stats", "d").out()).contains("export d: 0 bytes read, 0 bytes written");
    }

    @Test
    void mistakesExitNonZeroWithTheServersReason() {
        Run badGranularity = ctl("bitmap", "add", "d", "x", "--granularity", "3K");
        assertThat(badGranularity.exitCode()).isEqualTo(1);
        assertThat(badGranularity.out()).contains("nbd-node: control API at unix:", "granularity");
        Run unknownExport = ctl("bitmap", "clear", "nope", "x");
        assertThat(unknownExport.exitCode()).isEqualTo(1);
        assertThat(unknownExport.out()).contains("no export named 'nope'");
        assertThat(ctl("bitmap", "merge", "d", "c").exitCode()).as("merge needs a source").isEqualTo(2);
    }
}
