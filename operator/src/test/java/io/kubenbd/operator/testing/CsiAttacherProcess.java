package io.kubenbd.operator.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * kubernetes-csi's external-attacher ({@code csi-attacher}, built from the Go module proxy by
 * {@code scripts/k8s-test-binaries.sh}) running against a {@link KubeTestCluster} as a given user,
 * talking to a CSI controller on a unix socket: the sidecar the chart runs beside the operator.
 * It acts as the user through the kubeconfig's impersonation ({@code as:}), so only that user's
 * RBAC applies, as with the chart's ServiceAccount in a pod. Stopped by PID in {@link #close}.
 */
public final class CsiAttacherProcess implements AutoCloseable {
    private final LoggedProcess process;

    private CsiAttacherProcess(LoggedProcess process) {
        this.process = process;
    }

    /**
     * Starts the attacher in {@code dir} (its log: {@code dir/csi-attacher.log}) without leader election.
     * A refused attachment is retried after {@code retryMax} at the most (the sidecar's default is 5 minutes).
     */
    public static CsiAttacherProcess start(KubeTestCluster cluster, Path dir, Path csiSocket, String user,
                                           Duration retryMax) {
        Path kubeconfig = dir.resolve("csi-attacher.kubeconfig");
        try {
            Files.createDirectories(dir);
            // The admin's credentials, impersonating the user: client-go reads "as" from the kubeconfig's user entry.
            String admin = Files.readString(cluster.kubeconfig());
            String impersonating = admin.replaceFirst("(?m)^(\\s+)token: (.*)$", "$1token: $2\n$1as: " + user);
            if (impersonating.equals(admin)) {
                throw new IllegalStateException("no token line to add impersonation to in " + cluster.kubeconfig());
            }
            Files.writeString(kubeconfig, impersonating);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + kubeconfig, e);
        }
        Path binary = KubeBinaries.csiAttacher(dir);
        return new CsiAttacherProcess(LoggedProcess.start("csi-attacher", dir, List.of(
                binary.toString(),
                "--kubeconfig=" + kubeconfig,
                "--csi-address=" + csiSocket,
                "--leader-election=false",
                "--timeout=15s",
                "--retry-interval-start=500ms",
                "--retry-interval-max=" + retryMax.toMillis() + "ms",
                "--v=4")));
    }

    public boolean isAlive() {
        return process.isAlive();
    }

    /** The end of its log, for failure messages. */
    public String logTail() {
        return process.logTail();
    }

    @Override
    public void close() {
        process.stop();
    }
}
