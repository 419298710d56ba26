package io.kubenbd.node.cli;

import io.kubenbd.node.csi.CsiServer;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import sun.misc.Signal;

import java.net.InetAddress;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;

/** {@code nbd-node csi}: the CSI node plugin, until SIGTERM. */
@Command(name = "csi", mixinStandardHelpOptions = true, usageHelpAutoWidth = true,
        description = {"Serves the CSI Identity and Node services for the driver nbd.csi.kubenbd.io:",
                "attaches NBD exports on this node (FUSE + loop device), formats and mounts them."})
final class CsiCommand implements Callable<Integer> {
    @Option(names = "--endpoint", required = true, paramLabel = "unix:///PATH",
            description = "the gRPC socket kubelet talks to, e.g. unix:///csi/csi.sock")
    String endpoint;

    @Option(names = "--node-id", required = true, paramLabel = "NAME", description = "this node's name (NodeGetInfo)")
    String nodeId;

    @Option(names = "--state-dir", paramLabel = "DIR", defaultValue = "/var/lib/kube-nbd/csi",
            description = "where attachments and PSK files are kept (0600), to recover after a restart (default: ${DEFAULT-VALUE})")
    Path stateDir;

    @Option(names = "--fuse-library", paramLabel = "PATH", defaultValue = CsiServer.DEFAULT_FUSE_LIBRARY,
            description = "libfuse3 to load (default: ${DEFAULT-VALUE})")
    String fuseLibrary;

    @Option(names = "--attach", paramLabel = "MODE", defaultValue = "auto",
            description = "auto: the kernel's nbd driver when this node has it, else FUSE + loop device; kernel; fuse (default: ${DEFAULT-VALUE})")
    String attach;

    @Option(names = "--source-address", paramLabel = "IP",
            description = {"the address to make NBD connections from (default: the system's choice). Servers tell",
                    "consumer nodes apart by it for the single-writer claim, so give each node's plugin its own"})
    InetAddress sourceAddress;

    @Override
    public Integer call() throws Exception {
        CountDownLatch stop = new CountDownLatch(1);
        for (String signal : List.of("TERM", "INT")) {
            Signal.handle(new Signal(signal), s -> stop.countDown());
        }
        try (CsiServer server = CsiServer.start(endpoint, nodeId, stateDir, fuseLibrary, attach, sourceAddress)) {
            stop.await();
        }
        return 0;
    }
}
