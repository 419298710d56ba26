package io.kubenbd.node.csi;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Runs the node's own tools (losetup, blkid, mkfs, mount, umount, resize2fs) with a time limit;
 * their output is the error message when they fail, since it says what went wrong in their words.
 */
final class SystemCommand {
    /** Exit code and combined output. */
    record Result(int exitCode, String output) {
        boolean ok() {
            return exitCode == 0;
        }
    }

    private static final long TIMEOUT_SECONDS = 120;

    private SystemCommand() {}

    static Result run(String... argv) throws IOException {
        Process process = new ProcessBuilder(argv).redirectErrorStream(true).start();
        try {
            process.getOutputStream().close();
            byte[] output = process.getInputStream().readAllBytes();
            if (!process.waitFor(TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                throw new IOException(String.join(" ", argv) + " did not finish within " + TIMEOUT_SECONDS + " s");
            }
            return new Result(process.exitValue(), new String(output, StandardCharsets.UTF_8).strip());
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new IOException("interrupted running " + argv[0], e);
        }
    }

    /** Runs and throws with the tool's own output when it fails. */
    static String check(String... argv) throws IOException {
        Result result = run(argv);
        if (!result.ok()) {
            throw new IOException(String.join(" ", List.of(argv)) + " failed (exit " + result.exitCode() + "): " + result.output());
        }
        return result.output();
    }
}
