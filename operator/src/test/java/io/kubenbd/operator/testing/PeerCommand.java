package io.kubenbd.operator.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Runs a real tool (nbdinfo, nbdcopy, helm) with a time limit; a missing tool fails the test. */
public final class PeerCommand {
    /** Exit code, standard output and standard error. */
    public record Result(int exitCode, String stdout, String stderr) {
        /** Both streams, for messages. */
        public String output() {
            return stdout + stderr;
        }
    }

    private PeerCommand() {}

    public static Result run(Duration timeout, String... argv) throws IOException, InterruptedException {
        Path out = Files.createTempFile("peer", ".out");
        Path err = Files.createTempFile("peer", ".err");
        try {
            Process process = new ProcessBuilder(List.of(argv)).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
            if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
                throw new AssertionError(String.join(" ", argv) + " did not finish within " + timeout
                        + ":\n" + Files.readString(out, StandardCharsets.UTF_8) + Files.readString(err, StandardCharsets.UTF_8));
            }
            return new Result(process.exitValue(), Files.readString(out, StandardCharsets.UTF_8),
                    Files.readString(err, StandardCharsets.UTF_8));
        } catch (IOException e) {
            throw new AssertionError("cannot run " + argv[0] + " (installed by .ci/install-peers.sh): " + e.getMessage(), e);
        } finally {
            Files.deleteIfExists(out);
            Files.deleteIfExists(err);
        }
    }
}
