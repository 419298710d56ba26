package io.kubenbd.node.storage;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.List;

/** Runs a host tool (losetup, mount) for integration tests; a failure fails the test with the tool's stderr. */
final class HostCommand {
    private HostCommand() {
    }

    static String run(String... command) throws IOException, InterruptedException {
        Process process = new ProcessBuilder(command).start();
        process.getOutputStream().close();
        // The tools used here print a line or two, so reading one stream after the other cannot stall them.
        String stdout = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
        String stderr = new String(process.getErrorStream().readAllBytes(), StandardCharsets.UTF_8).strip();
        int exit = process.waitFor();
        if (exit != 0) {
            throw new AssertionError(List.of(command) + " exited with " + exit + ": " + stderr);
        }
        return stdout;
    }
}
