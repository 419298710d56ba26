package io.kubenbd.node.testing;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.IntFunction;

/**
 * A real NBD server process on a free loopback port: {@code nbd-node serve} from the
 * packaged jar, or a peer such as qemu-nbd. Killed by its PID on close.
 */
public final class ServerProcess implements AutoCloseable {
    private static final Duration START_LIMIT = Duration.ofSeconds(30);

    private final Process process;
    private final int port;
    private final Path log;
    private final List<String> command;

    private ServerProcess(Process process, int port, Path log, List<String> command) {
        this.process = process;
        this.port = port;
        this.log = log;
        this.command = command;
    }

    /**
     * Starts the same command again on the same port, after this server was killed or stopped:
     * a server restart as its clients see it.
     */
    public ServerProcess restart() throws IOException, InterruptedException {
        if (process.isAlive()) {
            throw new IllegalStateException("the server still runs; stop it first");
        }
        ServerProcess again = launch(command, port);
        if (again == null) {
            throw new AssertionError("server did not restart on port " + port);
        }
        return again;
    }

    /** Starts {@code nbd-node serve --bind 127.0.0.1 --port P} with the given extra arguments. */
    public static ServerProcess nbdNode(String... serveArgs) throws IOException, InterruptedException {
        return nbdNodeWith(port -> {
            List<String> args = new ArrayList<>(List.of("--bind", "127.0.0.1", "--port", String.valueOf(port)));
            args.addAll(List.of(serveArgs));
            return args;
        });
    }

    /**
     * Starts {@code nbd-node serve} with exactly the arguments {@code serveArgsForPort} gives for
     * a free port (no --bind/--port added), e.g. to put the port in a --config file.
     */
    public static ServerProcess nbdNodeWith(IntFunction<List<String>> serveArgsForPort)
            throws IOException, InterruptedException {
        return nbdNodeWith(List.of(), serveArgsForPort);
    }

    /** As {@link #nbdNodeWith(IntFunction)}, with JVM options before {@code -jar}. */
    public static ServerProcess nbdNodeWith(List<String> jvmOptions, IntFunction<List<String>> serveArgsForPort)
            throws IOException, InterruptedException {
        String jar = NbdNodeJar.jar();
        String java = NbdNodeJar.java();
        return start(port -> {
            List<String> command = new ArrayList<>(List.of(java));
            command.addAll(jvmOptions);
            command.addAll(List.of("-jar", jar, "serve"));
            command.addAll(serveArgsForPort.apply(port));
            return command;
        });
    }

    /** Starts qemu-nbd 10 serving {@code image} as export {@code name}, persistently, up to 8 connections. */
    public static ServerProcess qemuNbd(String name, Path image, String... extraArgs) throws IOException, InterruptedException {
        PeerCommand.requireInstalled("qemu-nbd");
        return start(port -> {
            List<String> command = new ArrayList<>(List.of("qemu-nbd", "-t", "-f", "raw", "-x", name,
                    "-b", "127.0.0.1", "-p", String.valueOf(port), "-e", "8"));
            command.addAll(List.of(extraArgs));
            command.add(image.toString());
            return command;
        });
    }

    public int port() {
        return port;
    }

    public String uri(String exportName) {
        return "nbd://127.0.0.1:" + port + "/" + exportName;
    }

    public Process process() {
        return process;
    }

    /** What the server has logged so far. */
    public String log() throws IOException {
        return Files.readString(log);
    }

    /** Sends SIGTERM and waits for the exit code. */
    public int terminate(Duration limit) throws InterruptedException {
        process.destroy();
        if (!process.waitFor(limit.toMillis(), TimeUnit.MILLISECONDS)) {
            throw new AssertionError("server did not exit within " + limit + " of SIGTERM");
        }
        return process.exitValue();
    }

    @Override
    public void close() throws IOException {
        if (process.isAlive()) {
            process.destroyForcibly();
            try {
                process.waitFor(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        Files.deleteIfExists(log);
    }

    private interface CommandForPort {
        List<String> command(int port);
    }

    private static ServerProcess start(CommandForPort commandForPort) throws IOException, InterruptedException {
        // A port found free can be taken before the server binds it; try a few.
        for (int attempt = 0; attempt < 5; attempt++) {
            int port = freePort();
            ServerProcess server = launch(commandForPort.command(port), port);
            if (server != null) {
                return server;
            }
        }
        throw new AssertionError("no free port found for the server after 5 attempts");
    }

    /** Starts the command and waits until the port accepts; null when the port was taken meanwhile. */
    private static ServerProcess launch(List<String> command, int port) throws IOException, InterruptedException {
        Path log = Files.createTempFile("nbd-server", ".log");
        Process process = new ProcessBuilder(command)
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .start();
        ServerProcess server = new ServerProcess(process, port, log, List.copyOf(command));
        long deadline = System.nanoTime() + START_LIMIT.toNanos();
        while (System.nanoTime() < deadline && process.isAlive()) {
            if (accepts(port)) {
                return server;
            }
            Thread.sleep(50);
        }
        String output = Files.readString(log);
        server.close();
        if (!output.contains("in use")) {
            throw new AssertionError("server did not start on port " + port + ":\n" + output);
        }
        return null;
    }

    private static boolean accepts(int port) {
        try (Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress("127.0.0.1", port), 200);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return socket.getLocalPort();
        }
    }
}
