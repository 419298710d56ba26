package io.kubenbd.node.csi;

import io.grpc.ManagedChannel;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.node.csi.v1.NodeGrpc;
import io.kubenbd.node.testing.NbdNodeJar;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * {@code nbd-node csi} from the packaged jar, as kubelet would run it, with a gRPC client on its
 * socket, in {@code directory} as its working directory. Stopped by PID: SIGTERM in {@link #close}, SIGKILL in {@link #kill} (a crashed plugin).
 */
final class CsiPluginProcess implements AutoCloseable {
    private final Process process;
    private final Path socket;
    private final Path log;
    private final EventLoopGroup group;
    private final ManagedChannel channel;

    private CsiPluginProcess(Process process, Path socket, Path log) {
        this.process = process;
        this.socket = socket;
        this.log = log;
        this.group = new EpollEventLoopGroup(1);
        this.channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toFile()))
                .eventLoopGroup(group).channelType(EpollDomainSocketChannel.class).usePlaintext().build();
    }

    static CsiPluginProcess start(Path directory, Path stateDir, String... options) throws IOException, InterruptedException {
        Path socket = directory.resolve("csi.sock");
        Path log = directory.resolve("plugin-" + System.nanoTime() + ".log");
        Files.deleteIfExists(socket);
        List<String> command = new ArrayList<>(List.of(NbdNodeJar.java(), "-jar", NbdNodeJar.jar(), "csi",
                "--endpoint", "unix://" + socket, "--node-id", "test-node", "--state-dir", stateDir.toString()));
        command.addAll(List.of(options));
        // Run in the test's directory: a relative path the plugin wrongly honoured lands where NodeLeftovers finds it.
        Process process = new ProcessBuilder(command).directory(directory.toFile()).redirectErrorStream(true)
                .redirectOutput(log.toFile()).start();
        Instant deadline = Instant.now().plusSeconds(60);
        while (!Files.exists(socket) && process.isAlive() && Instant.now().isBefore(deadline)) {
            Thread.sleep(100);
        }
        if (!Files.exists(socket)) {
            process.destroyForcibly();
            throw new AssertionError("nbd-node csi did not listen on " + socket + ":\n" + Files.readString(log));
        }
        return new CsiPluginProcess(process, socket, log);
    }

    Path socket() {
        return socket;
    }

    NodeGrpc.NodeBlockingStub node() {
        return NodeGrpc.newBlockingStub(channel).withDeadlineAfter(5, TimeUnit.MINUTES);
    }

    String log() throws IOException {
        return Files.readString(log);
    }

    /** SIGKILL, as when the plugin crashes: nothing is cleaned up. */
    void kill() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor(10, TimeUnit.SECONDS);
        shutdownChannel();
    }

    private void shutdownChannel() throws InterruptedException {
        channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    }

    @Override
    public void close() throws InterruptedException {
        try {
            // The plugin's log beside the test's output: what it did is what a failure needs explained.
            System.out.println("--- nbd-node csi log " + log + ":\n" + Files.readString(log));
        } catch (IOException e) {
            System.out.println("cannot read " + log + ": " + e.getMessage());
        }
        shutdownChannel();
        process.destroy();
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
        }
    }
}
