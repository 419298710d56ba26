package io.kubenbd.operator.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A child process whose stdout and stderr go to one log file. Writing to a file instead of a pipe
 * means nobody has to drain the output (a full pipe would block the child), the output survives
 * the process for post-mortem reading, and a startup failure can quote the end of the log.
 */
final class LoggedProcess {

    /** How long a process gets to exit after SIGTERM before it is killed, and after SIGKILL. */
    private static final Duration STOP_TIMEOUT = Duration.ofSeconds(10);
    private static final int TAIL_LINES = 30;

    private final String name;
    private final Path log;
    private final Process process;

    private LoggedProcess(String name, Path log, Process process) {
        this.name = name;
        this.log = log;
        this.process = process;
    }

    /** Starts {@code command} in {@code dir}, logging to {@code dir/<name>.log}. */
    static LoggedProcess start(String name, Path dir, List<String> command) {
        Path log = dir.resolve(name + ".log");
        ProcessBuilder builder = new ProcessBuilder(command)
                .directory(dir.toFile())
                .redirectErrorStream(true)
                .redirectOutput(log.toFile());
        try {
            return new LoggedProcess(name, log, builder.start());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + name + ": " + String.join(" ", command), e);
        }
    }

    String name() {
        return name;
    }

    boolean isAlive() {
        return process.isAlive();
    }

    int exitValue() {
        return process.exitValue();
    }

    /** Waits at most {@code timeout} for the process to exit; returns whether it did. */
    boolean waitFor(Duration timeout) throws InterruptedException {
        return process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS);
    }

    /** The last lines of the log, headed by the log's path, for failure messages. */
    String logTail() {
        String text;
        try {
            text = new String(Files.readAllBytes(log), StandardCharsets.UTF_8);
        } catch (NoSuchFileException e) {
            return "--- " + name + ": no log at " + log + " ---";
        } catch (IOException e) {
            return "--- " + name + ": cannot read " + log + ": " + e + " ---";
        }
        List<String> lines = text.lines().toList();
        List<String> tail = lines.subList(Math.max(0, lines.size() - TAIL_LINES), lines.size());
        return "--- last " + tail.size() + " lines of " + log + " ---\n" + String.join("\n", tail);
    }

    /**
     * Stops the process: SIGTERM first so etcd and kube-apiserver shut down cleanly, SIGKILL if
     * that takes longer than {@link #STOP_TIMEOUT}. Bounded, so a hung child cannot hang the tests.
     */
    void stop() {
        if (!process.isAlive()) {
            return;
        }
        process.destroy();
        try {
            if (!waitFor(STOP_TIMEOUT)) {
                process.destroyForcibly();
                waitFor(STOP_TIMEOUT);
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }
}
