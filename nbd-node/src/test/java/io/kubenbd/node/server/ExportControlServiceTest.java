package io.kubenbd.node.server;

import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.control.v1.AddBitmapRequest;
import io.kubenbd.node.control.v1.Bitmap;
import io.kubenbd.node.control.v1.BitmapRequest;
import io.kubenbd.node.control.v1.CheckpointRequest;
import io.kubenbd.node.control.v1.ExportControlGrpc;
import io.kubenbd.node.control.v1.ExportStatus;
import io.kubenbd.node.control.v1.GetStatisticsRequest;
import io.kubenbd.node.control.v1.ListExportsRequest;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The control API over a real unix socket, against a server with live NBD connections. */
class ExportControlServiceTest {
    @TempDir
    Path dir;
    private NbdServer nbd;
    private ControlServer control;
    private EpollEventLoopGroup group;
    private ManagedChannel channel;
    private ExportControlGrpc.ExportControlBlockingStub stub;

    @BeforeEach
    void start() throws Exception {
        Path image = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(image.toFile(), "rw")) {
            f.setLength(16 << 20);
        }
        ExportRegistry registry = ExportRegistry.open(List.of(new ExportConfig("disk", image, false, "a disk", 4)));
        nbd = NbdServer.start(new InetSocketAddress("127.0.0.1", 0), registry, ServerSettings.defaults());
        Path socket = dir.resolve("control.sock");
        control = ControlServer.start(new ControlAddress.Unix(socket), registry);
        group = new EpollEventLoopGroup(1);
        channel = NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toFile()))
                .channelType(EpollDomainSocketChannel.class).eventLoopGroup(group).usePlaintext().build();
        stub = ExportControlGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS);
    }

    @AfterEach
    void stop() {
        channel.shutdownNow();
        group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
        control.close();
        nbd.close();
    }

    @Test
    void theSocketIsOwnerOnly() throws Exception {
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(dir.resolve("control.sock"))))
                .isEqualTo("rw-------");
    }

    @Test
    void listsExportsWithTheirLiveConnections() throws Exception {
        try (NbdClient client = NbdClient.connect("127.0.0.1", nbd.port(), Duration.ofSeconds(10))) {
            client.negotiateExtendedHeaders();
            client.go("disk");
            client.write(0, new byte[4096], 0);
            ExportStatus export = stub.listExports(ListExportsRequest.getDefaultInstance()).getExports(0);
            assertThat(export.getName()).isEqualTo("disk");
            assertThat(export.getSize()).isEqualTo(16 << 20);
            assertThat(export.getDescription()).isEqualTo("a disk");
            assertThat(export.getMaxConnections()).isEqualTo(4);
            assertThat(export.getMetaContextsList()).containsExactly("base:allocation", "qemu:allocation-depth");
            assertThat(export.getConnectionsList()).singleElement().satisfies(c -> {
                assertThat(c.getPeer()).startsWith("127.0.0.1:");
                assertThat(c.getReplies()).isEqualTo("extended");
                assertThat(c.getTls()).isEmpty();
                assertThat(c.getRequests()).isEqualTo(1);
            });
        }
    }

    @Test
    void statisticsCountBytesRequestsAndErrors() throws Exception {
        try (NbdClient client = NbdClient.connect("127.0.0.1", nbd.port(), Duration.ofSeconds(10))) {
            client.go("disk");
            client.write(0, new byte[8192], 0);
            client.read(0, 4096);
            client.read(0, 4096);
            assertThat(client.call(io.kubenbd.node.protocol.CommandType.READ, 0, 32L << 20, 512, null).error())
                    .as("a read past the end").isNotNull();
        }
        var stats = stub.getStatistics(GetStatisticsRequest.newBuilder().setExport("disk").build());
        assertThat(stats.getBytesWritten()).isEqualTo(8192);
        assertThat(stats.getBytesRead()).isEqualTo(8192);
        assertThat(stats.getRequests()).isEqualTo(4);
        assertThat(stats.getErrors()).isEqualTo(1);
    }

    @Test
    void bitmapsCanBeAddedAtRunTimeAndRecordWritesFromThenOn() throws Exception {
        assertThat(stub.listExports(ListExportsRequest.getDefaultInstance()).getExports(0).getBitmapsList()).isEmpty();
        var added = stub.addBitmap(AddBitmapRequest.newBuilder().setExport("disk").setName("b1").build());
        assertThat(added.getState()).isEqualTo("recording");
        assertThat(added.getGranularity()).isEqualTo(65536);
        try (NbdClient client = NbdClient.connect("127.0.0.1", nbd.port(), Duration.ofSeconds(10))) {
            client.go("disk");
            client.write(1 << 20, new byte[100], 0);
        }
        var frozen = stub.checkpoint(CheckpointRequest.newBuilder().setExport("disk").setFreeze("b1").setStart("b2").build());
        assertThat(frozen.getName()).isEqualTo("b2");
        ExportStatus export = stub.listExports(ListExportsRequest.getDefaultInstance()).getExports(0);
        assertThat(export.getBitmapsList()).extracting(Bitmap::getName, Bitmap::getState, Bitmap::getDirtyBytes)
                .containsExactly(org.assertj.core.groups.Tuple.tuple("b1", "frozen", 65536L),
                        org.assertj.core.groups.Tuple.tuple("b2", "recording", 0L));
        assertThat(export.getMetaContextsList()).contains("qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b2");
    }

    @Test
    void bitmapMistakesGetStatusesACallerCanActOn() {
        assertThatThrownBy(() -> stub.addBitmap(AddBitmapRequest.newBuilder().setExport("disk").setName("-bad").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT));
        assertThatThrownBy(() -> stub.addBitmap(AddBitmapRequest.newBuilder().setExport("disk").setName("b")
                .setGranularity(1000).build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT));
        assertThatThrownBy(() -> stub.clearBitmap(BitmapRequest.newBuilder().setExport("disk").setName("absent").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT))
                .hasMessageContaining("absent");
        stub.addBitmap(AddBitmapRequest.newBuilder().setExport("disk").setName("f").build());
        stub.checkpoint(CheckpointRequest.newBuilder().setExport("disk").setFreeze("f").setStart("g").build());
        assertThatThrownBy(() -> stub.checkpoint(CheckpointRequest.newBuilder().setExport("disk").setFreeze("f")
                .setStart("h").build()))
                .as("a frozen bitmap cannot be frozen again")
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION));
        assertThatThrownBy(() -> stub.removeBitmap(BitmapRequest.newBuilder().setExport("nope").setName("f").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND));
    }

    @Test
    void anUnknownExportIsNotFound() {
        assertThatThrownBy(() -> stub.getStatistics(GetStatisticsRequest.newBuilder().setExport("nope").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND))
                .hasMessageContaining("no export named 'nope'");
    }
    @Test
    void bitmapsBeyondTheExportsBoundAreRefusedAsResourceExhausted() {
        for (int i = 0; i < 32; i++) {
            stub.addBitmap(AddBitmapRequest.newBuilder().setExport("disk").setName("b" + i).build());
        }
        assertThatThrownBy(() -> stub.addBitmap(AddBitmapRequest.newBuilder().setExport("disk").setName("b32").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED))
                .hasMessageContaining("export already has 32 dirty bitmaps, the most allowed");
    }
}
