package io.kubenbd.operator.testing;

import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.Watcher;
import io.fabric8.kubernetes.client.WatcherException;
import io.kubenbd.operator.model.NbdExport;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code bench/operator-scale.sh}: creates N NbdExports (each over its own PVC, with a PV for
 * consumers) against a real API server while the packaged operator runs as its own process, and
 * reports the time until every export has its dependents and status, the per-export latency from
 * create to first status (p50, p99, max), the operator's reconcile time from its own metrics, and
 * the operator's heap and RSS. Not a test: it prints figures.
 */
public final class ScaleBenchmark {
    private static final Pattern HEAP_USED = Pattern.compile("jvm_memory_used_bytes\\{area=\"heap\",id=\"[^\"]+\"} ([0-9.E+]+)");

    private ScaleBenchmark() {}

    public static void main(String[] args) throws Exception {
        int count = args.length > 0 ? Integer.parseInt(args[0]) : 1000;
        String jvmOptions = args.length > 1 ? args[1] : "-XX:+UseSerialGC -Xmx256m";
        Path work = Files.createTempDirectory(Path.of("/dev/shm"), "kube-nbd-scale-");
        try (KubeTestCluster cluster = KubeTestCluster.start(work.resolve("cluster"))) {
            KubernetesClient client = cluster.client();
            OperatorTestBed.installCrds(cluster);
            String ns = cluster.createNamespace("scale");
            ExecutorService pool = Executors.newFixedThreadPool(8);
            System.out.printf("creating %d PVCs (not timed) ...%n", count);
            runAll(pool, count, i -> OperatorTestBed.createClaim(client, ns, "vol-" + i, "Filesystem"));

            int httpPort = OperatorTestBed.freePort();
            List<String> command = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString()));
            command.addAll(List.of(jvmOptions.split(" ")));
            command.addAll(List.of("-jar", Path.of("target", "kube-nbd-operator.jar").toAbsolutePath().toString(),
                    "--kubeconfig", cluster.kubeconfig().toString(), "--no-leader-election", "--control-ca-namespace", ns,
                    "--http-bind", "127.0.0.1", "--http-port", Integer.toString(httpPort)));
            Process operator = new ProcessBuilder(command).redirectErrorStream(true)
                    .redirectOutput(work.resolve("operator.log").toFile()).start();
            Thread stopOperator = new Thread(operator::destroyForcibly);
            Runtime.getRuntime().addShutdownHook(stopOperator); // Ctrl-C must not leave the operator behind
            try {
                Await.until("operator ready", Duration.ofSeconds(60), () -> get(httpPort, "/readyz"), "ok\n"::equals);
                Map<String, Long> created = new ConcurrentHashMap<>();
                Map<String, Long> reconciled = new ConcurrentHashMap<>();
                var watch = client.resources(NbdExport.class).inNamespace(ns).watch(new Watcher<>() {
                    @Override
                    public void eventReceived(Action action, NbdExport export) {
                        var status = export.getStatus();
                        if (status != null && status.condition("VolumeReady") != null
                                && "True".equals(status.condition("VolumeReady").getStatus())) {
                            reconciled.putIfAbsent(export.getMetadata().getName(), System.nanoTime());
                        }
                    }

                    @Override
                    public void onClose(WatcherException cause) {
                    }
                });
                System.out.printf("creating %d NbdExports ...%n", count);
                long start = System.nanoTime();
                runAll(pool, count, i -> {
                    created.put("vol-" + i, System.nanoTime());
                    OperatorTestBed.createExport(client, ns, """
                            apiVersion: kubenbd.io/v1alpha1
                            kind: NbdExport
                            metadata: {name: vol-%d}
                            spec:
                              source: {persistentVolumeClaim: vol-%d, imagePath: disk.img}
                              persistentVolume: {create: true}
                            """.formatted(i, i));
                });
                long createdAll = System.nanoTime();
                Await.until("all exports reconciled", Duration.ofMinutes(10), reconciled::size, n -> n == count);
                long done = System.nanoTime();
                watch.close();
                long rssPeakKb = procStatus(operator.pid(), "VmHWM");
                long rssKb = procStatus(operator.pid(), "VmRSS");
                String metrics = get(httpPort, "/metrics");
                Files.createDirectories(Path.of("..", "bench", "out"));
                Files.writeString(Path.of("..", "bench", "out", "operator-scale.metrics"), metrics);
                int secrets = client.secrets().inNamespace(ns).withLabel("kubenbd.io/export").list().getItems().size();
                int sets = client.apps().statefulSets().inNamespace(ns).list().getItems().size();
                int services = client.services().inNamespace(ns).list().getItems().size();
                int pvs = client.persistentVolumes().withLabel("kubenbd.io/export").list().getItems().size();
                List<Long> latencies = new ArrayList<>();
                created.forEach((name, t) -> latencies.add(reconciled.get(name) - t));
                latencies.sort(null);
                System.out.printf("""

                        operator scale benchmark: %d NbdExports, operator JVM %s
                          created in                %6.1f s
                          all reconciled after      %6.1f s (from the first create; dependents: %d Secrets, %d StatefulSets, %d Services, %d PVs)
                          create -> status latency  p50 %.0f ms, p99 %.0f ms, max %.0f ms
                          operator reconciles       %s
                          operator heap used        %.0f MiB (after the run)
                          operator RSS              %d MiB now, %d MiB peak
                        """, count, jvmOptions, (createdAll - start) / 1e9, (done - start) / 1e9, secrets, sets, services, pvs,
                        percentile(latencies, 50), percentile(latencies, 99), latencies.getLast() / 1e6,
                        reconcileSummary(metrics), heapUsed(metrics) / 1048576.0, rssKb / 1024, rssPeakKb / 1024);
            } finally {
                operator.destroy();
                if (!operator.waitFor(20, TimeUnit.SECONDS)) {
                    operator.destroyForcibly();
                }
                pool.shutdownNow();
            }
        } finally {
            try (var paths = Files.walk(work)) {
                paths.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }

    private interface Step {
        void run(int i) throws Exception;
    }

    private static void runAll(ExecutorService pool, int count, Step step) throws Exception {
        List<java.util.concurrent.Future<?>> futures = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            int n = i;
            futures.add(pool.submit(() -> {
                step.run(n);
                return null;
            }));
        }
        for (var f : futures) {
            f.get(5, TimeUnit.MINUTES);
        }
    }

    private static double percentile(List<Long> sortedNanos, int p) {
        int index = (int) Math.ceil(p / 100.0 * sortedNanos.size()) - 1;
        return sortedNanos.get(Math.max(0, index)) / 1e6;
    }

    private static String get(int port, String path) {
        try {
            return HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path)).build(),
                    HttpResponse.BodyHandlers.ofString()).body();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    private static double heapUsed(String metrics) {
        Matcher m = HEAP_USED.matcher(metrics);
        double sum = 0;
        while (m.find()) {
            sum += Double.parseDouble(m.group(1));
        }
        return sum;
    }

    /**
     * Count, p50, p99 (upper bounds of java-operator-sdk's histogram buckets, as Prometheus'
     * histogram_quantile would place them), mean and max of the reconcile timer.
     */
    private static String reconcileSummary(String metrics) {
        String timer = "operator_sdk_controllers_execution_reconcile_seconds";
        double count = sample(metrics, timer + "_count");
        if (count == 0) {
            return "(no reconcile timer in /metrics)";
        }
        Matcher bucket = Pattern.compile("^" + timer + "_bucket\\{.*le=\"([0-9.E+-]+)\"} ([0-9.E+-]+)$", Pattern.MULTILINE)
                .matcher(metrics);
        double p50 = Double.NaN;
        double p99 = Double.NaN;
        while (bucket.find()) {
            double le = Double.parseDouble(bucket.group(1));
            double cumulative = Double.parseDouble(bucket.group(2));
            if (Double.isNaN(p50) && cumulative >= 0.5 * count) {
                p50 = le;
            }
            if (Double.isNaN(p99) && cumulative >= 0.99 * count) {
                p99 = le;
            }
        }
        return "%.0f runs, p50 <= %.0f ms, p99 <= %.0f ms, mean %.1f ms, max %.0f ms".formatted(count, p50 * 1000, p99 * 1000,
                sample(metrics, timer + "_sum") / count * 1000, sample(metrics, timer + "_max") * 1000);
    }

    private static double sample(String metrics, String name) {
        Matcher m = Pattern.compile("^" + name + "(\\{[^}]*})? ([0-9.E+-]+)$", Pattern.MULTILINE).matcher(metrics);
        double total = 0;
        while (m.find()) {
            double value = Double.parseDouble(m.group(2));
            total = name.endsWith("_max") ? Math.max(total, value) : total + value;
        }
        return total;
    }

    private static long procStatus(long pid, String field) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc", Long.toString(pid), "status"))) {
            if (line.startsWith(field + ":")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        return -1;
    }
}
