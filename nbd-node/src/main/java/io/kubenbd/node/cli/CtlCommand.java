package io.kubenbd.node.cli;

import io.grpc.ChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.EventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.node.control.v1.AddBitmapRequest;
import io.kubenbd.node.control.v1.Bitmap;
import io.kubenbd.node.control.v1.BitmapRequest;
import io.kubenbd.node.control.v1.CheckpointRequest;
import io.kubenbd.node.control.v1.Connection;
import io.kubenbd.node.control.v1.MergeBitmapsRequest;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ExportStatistics;
import io.kubenbd.node.control.v1.ExportStatus;
import io.kubenbd.node.control.v1.GetStatisticsRequest;
import io.kubenbd.node.control.v1.ListExportsRequest;
import io.kubenbd.node.server.ControlAddress;
import io.kubenbd.node.tls.MutualTls;
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
        subcommands = {CtlCommand.Exports.class, CtlCommand.Stats.class, CtlCommand.BitmapCommands.class})
final class CtlCommand {

    @Option(names = "--control", paramLabel = "ADDR", required = true,
            description = "The server's control address: unix:PATH, or HOST:PORT with --tls-cert, --tls-key and --tls-ca.")
    String control;

    @Option(names = "--tls-cert", paramLabel = "FILE",
            description = "Client certificate (PEM) for a HOST:PORT control address; it must chain to the server's control CA.")
    java.nio.file.Path tlsCert;

    @Option(names = "--tls-key", paramLabel = "FILE", description = "Private key of --tls-cert (PEM).")
    java.nio.file.Path tlsKey;

    @Option(names = "--tls-ca", paramLabel = "FILE", description = "CA (PEM) the server's certificate must chain to.")
    java.nio.file.Path tlsCa;

    @Option(names = "--tls-server-name", paramLabel = "NAME",
            description = "Name the server's certificate must carry (default: HOST of --control).")
    String tlsServerName;

    /** Runs {@code call} against the control API and turns gRPC failures into one-line errors. */
    <T> T call(java.util.function.Function<ExportControlGrpc.ExportControlBlockingStub, T> call) throws IOException {
        ControlAddress address = ControlAddress.parse(control);
        EventLoopGroup group = null;
        NettyChannelBuilder builder;
        switch (address) {
            case ControlAddress.Unix unix -> {
                if (tlsCert != null || tlsKey != null || tlsCa != null || tlsServerName != null) {
                    throw new IllegalArgumentException("--tls-* options are for a HOST:PORT control address, not " + unix);
                }
                group = new EpollEventLoopGroup(1);
                builder = NettyChannelBuilder.forAddress(new DomainSocketAddress(unix.path().toFile()))
                        .channelType(EpollDomainSocketChannel.class)
                        .eventLoopGroup(group);
            }
            case ControlAddress.Tcp tcp -> {
                builder = NettyChannelBuilder.forAddress(tcp.address(), credentials(tcp));
                if (tlsServerName != null) {
                    builder.overrideAuthority(tlsServerName);
                }
            }
        }
        ManagedChannel channel = (address instanceof ControlAddress.Unix ? builder.usePlaintext() : builder).build();
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

    /** A TCP control API speaks mutual TLS only; a unix socket is plain (its file mode guards it). */
    private ChannelCredentials credentials(ControlAddress.Tcp address) throws IOException {
        if (tlsCert == null || tlsKey == null || tlsCa == null) {
            throw new IllegalArgumentException("ctl --control " + address
                    + " needs --tls-cert, --tls-key and --tls-ca: a TCP control API speaks mutual TLS only");
        }
        MutualTls tls = MutualTls.fromFiles(tlsCert, tlsKey, tlsCa, message -> { });
        return TlsChannelCredentials.newBuilder().keyManager(tls.keyManager()).trustManager(tls.trustManager()).build();
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
                out.printf("%s  %s  %d bytes%s  connections %d/%d  contexts %s%s%n", export.getName(), export.getPath(),
                        export.getSize(), export.getReadOnly() ? "  read-only" : "", export.getConnectionsCount(),
                        export.getMaxConnections(), String.join(",", export.getMetaContextsList()),
                        export.getWriter().isEmpty() ? "" : "  claimed for writing by " + export.getWriter());
                for (Bitmap b : export.getBitmapsList()) {
                    out.println("  " + describe(b));
                }
                for (Connection c : export.getConnectionsList()) {
                    out.printf("  conn %d  %s  %s replies  %s  %d requests%n", c.getId(), c.getPeer(), c.getReplies(),
                            c.getTls().isEmpty() ? "plaintext" : c.getTls(), c.getRequests());
                }
            }
            return 0;
        }
    }

    static String describe(Bitmap b) {
        return "bitmap " + b.getName() + "  granularity " + b.getGranularity() + "  " + b.getState()
                + "  " + b.getDirtyBytes() + " dirty bytes" + (b.getReason().isEmpty() ? "" : "  (" + b.getReason() + ")");
    }

    /** {@code ctl bitmap ...}: each subcommand is one control API call whose answer is printed. */
    @Command(name = "bitmap", mixinStandardHelpOptions = true, usageHelpAutoWidth = true,
            description = "Manage an export's dirty bitmaps.")
    static final class BitmapCommands {
        @ParentCommand
        CtlCommand ctl;

        @Command(name = "add", mixinStandardHelpOptions = true,
                description = "Start a bitmap that records every write from now on.")
        int add(@Parameters(paramLabel = "EXPORT") String export, @Parameters(paramLabel = "NAME") String name,
                @Option(names = "--granularity", paramLabel = "SIZE", description = "Bytes per bit (default 64K).")
                String granularity) throws IOException {
            long bytes = granularity(granularity);
            print(ctl.call(stub -> stub.addBitmap(AddBitmapRequest.newBuilder()
                    .setExport(export).setName(name).setGranularity(bytes).build())));
            return 0;
        }

        @Command(name = "clear", mixinStandardHelpOptions = true,
                description = "Forget what a bitmap recorded (also recovers an inconsistent one).")
        int clear(@Parameters(paramLabel = "EXPORT") String export, @Parameters(paramLabel = "NAME") String name)
                throws IOException {
            print(ctl.call(stub -> stub.clearBitmap(BitmapRequest.newBuilder().setExport(export).setName(name).build())));
            return 0;
        }

        @Command(name = "remove", mixinStandardHelpOptions = true, description = "Delete a bitmap.")
        int remove(@Parameters(paramLabel = "EXPORT") String export, @Parameters(paramLabel = "NAME") String name)
                throws IOException {
            ctl.call(stub -> stub.removeBitmap(BitmapRequest.newBuilder().setExport(export).setName(name).build()));
            System.out.println("removed bitmap " + name);
            return 0;
        }

        @Command(name = "checkpoint", mixinStandardHelpOptions = true,
                description = "Freeze bitmap FREEZE and start bitmap START at the same instant.")
        int checkpoint(@Parameters(paramLabel = "EXPORT") String export, @Parameters(paramLabel = "FREEZE") String freeze,
                       @Parameters(paramLabel = "START") String start,
                       @Option(names = "--granularity", paramLabel = "SIZE",
                               description = "Of the new bitmap (default 64K).") String granularity) throws IOException {
            long bytes = granularity(granularity);
            print(ctl.call(stub -> stub.checkpoint(CheckpointRequest.newBuilder()
                    .setExport(export).setFreeze(freeze).setStart(start).setGranularity(bytes).build())));
            return 0;
        }

        @Command(name = "merge", mixinStandardHelpOptions = true, description = "TARGET |= every SOURCE.")
        int merge(@Parameters(paramLabel = "EXPORT") String export, @Parameters(paramLabel = "TARGET") String target,
                  @Parameters(arity = "1..*", paramLabel = "SOURCE") java.util.List<String> sources) throws IOException {
            print(ctl.call(stub -> stub.mergeBitmaps(MergeBitmapsRequest.newBuilder()
                    .setExport(export).setTarget(target).addAllSources(sources).build())));
            return 0;
        }

        /** 0 lets the server choose its default. */
        private static long granularity(String text) {
            return text == null ? 0 : ByteSize.parse(text, "--granularity");
        }

        private static void print(Bitmap bitmap) {
            System.out.println(describe(bitmap));
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
