package io.kubenbd.node.cli;

import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.node.control.v1.Connection;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ExportStatistics;
import io.kubenbd.node.control.v1.ExportStatus;
import io.kubenbd.node.control.v1.GetStatisticsRequest;
import io.kubenbd.node.control.v1.ListExportsRequest;
import io.kubenbd.node.server.ControlAddress;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.ParentCommand;

import java.io.IOException;
import java.io.PrintStream;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;

@Command(name = "ctl", mixinStandardHelpOptions = true, usageHelpAutoWidth = true,
        description = "Drive a running server's control API (serve --control ADDR).",
        subcommands = {CtlCommand.Exports.class, CtlCommand.Stats.class})
final class CtlCommand {

    @Option(names = "--control", paramLabel = "ADDR", required = true,
            description = "The server's control address: unix:PATH or HOST:PORT.")
    String control;

    /** Runs {@code call} against the control API and turns gRPC failures into one-line errors. */
    <T> T call(java.util.function.Function<ExportControlGrpc.ExportControlBlockingStub, T> call) throws IOException {
        ControlAddress address = ControlAddress.parse(control);
        EventLoopGroup group = null;
        NettyChannelBuilder builder;
        switch (address) {
            case ControlAddress.Unix unix -> {
                group = new EpollEventLoopGroup(1);
                builder = NettyChannelBuilder.forAddress(new DomainSocketAddress(unix.path().toFile()))
                        .channelType(EpollDomainSocketChannel.class)
                        .eventLoopGroup(group);
            }
            case ControlAddress.Tcp tcp -> builder = NettyChannelBuilder.forAddress(tcp.address());
        }
        ManagedChannel channel = builder.usePlaintext().build();
        try {
            return call.apply(ExportControlGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS));
        } catch (StatusRuntimeException e) {
            String what = e.getStatus().getDescription() != null ? e.getStatus().getDescription()
                    : e.getStatus().getCode().toString();
            throw new IOException("control API at " + address + ": " + what, e);
        } finally {
            channel.shutdownNow();
            if (group != null) {
                group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
            }
        }
    }

    @Command(name = "exports", mixinStandardHelpOptions = true, description = "List exports and their connections.")
    static final class Exports implements Callable<Integer> {
        @ParentCommand
        CtlCommand ctl;

        @Override
        public Integer call() throws IOException {
            PrintStream out = System.out;
            for (ExportStatus export : ctl.call(stub -> stub.listExports(ListExportsRequest.getDefaultInstance()))
                    .getExportsList()) {
                out.printf("%s  %s  %d bytes%s  connections %d/%d  contexts %s%n", export.getName(), export.getPath(),
                        export.getSize(), export.getReadOnly() ? "  read-only" : "", export.getConnectionsCount(),
                        export.getMaxConnections(), String.join(",", export.getMetaContextsList()));
                for (Connection c : export.getConnectionsList()) {
                    out.printf("  conn %d  %s  %s replies  %s  %d requests%n", c.getId(), c.getPeer(), c.getReplies(),
                            c.getTls().isEmpty() ? "plaintext" : c.getTls(), c.getRequests());
                }
            }
            return 0;
        }
    }

    @Command(name = "stats", mixinStandardHelpOptions = true, description = "Byte and request counters of an export.")
    static final class Stats implements Callable<Integer> {
        @ParentCommand
        CtlCommand ctl;

        @Parameters(paramLabel = "EXPORT")
        String export;

        @Override
        public Integer call() throws IOException {
            ExportStatistics s = ctl.call(stub -> stub.getStatistics(
                    GetStatisticsRequest.newBuilder().setExport(export).build()));
            System.out.printf("export %s: %d bytes read, %d bytes written, %d requests, %d errors, %d connections%n",
                    s.getExport(), s.getBytesRead(), s.getBytesWritten(), s.getRequests(), s.getErrors(),
                    s.getConnections());
            return 0;
        }
    }
}
