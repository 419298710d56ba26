package io.kubenbd.operator.testing;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import io.fabric8.kubernetes.api.model.BindingBuilder;
import io.fabric8.kubernetes.api.model.Container;
import io.fabric8.kubernetes.api.model.ContainerStatusBuilder;
import io.fabric8.kubernetes.api.model.EnvVar;
import io.fabric8.kubernetes.api.model.Pod;
import io.fabric8.kubernetes.api.model.PodConditionBuilder;
import io.fabric8.kubernetes.api.model.PodStatus;
import io.fabric8.kubernetes.api.model.PodStatusBuilder;
import io.fabric8.kubernetes.api.model.DownwardAPIVolumeFile;
import io.fabric8.kubernetes.api.model.DownwardAPIVolumeSource;
import io.fabric8.kubernetes.api.model.Secret;
import io.fabric8.kubernetes.api.model.Volume;
import io.fabric8.kubernetes.client.KubernetesClient;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Plays scheduler and kubelet for one server pod, since no kubelet runs in the tests: binds the
 * pod to a node, then starts its container's command, args and env exactly as the pod spec says,
 * with {@code $(VAR)} expanded as the kubelet does, Secret volumes and downward API annotations
 * written out as files (paths in a YAML file mapped like the arguments) and every
 * mount path mapped onto a local directory. The command must be the image's nbd-node launcher,
 * which is run as {@code java -jar nbd-node.jar}. When the readiness probe's port answers, the
 * pod's status is set Running and Ready; when the server exits, the container is reported
 * terminated with the end of its log as message, as {@code FallbackToLogsOnError} does.
 */
public final class LocalPodRunner implements AutoCloseable {
    public static final String NODE = "node-1";
    private static final Pattern VAR_REF = Pattern.compile("\\$\\(([A-Za-z_][A-Za-z0-9_]*)\\)");
    private static final Duration READY_TIMEOUT = Duration.ofSeconds(30);

    private final KubernetesClient client;
    private final String namespace;
    private final String podName;
    private final Process process;
    private final Path log;
    private final List<String> commandLine;

    private LocalPodRunner(KubernetesClient client, String namespace, String podName, Process process, Path log,
                           List<String> commandLine) {
        this.client = client;
        this.namespace = namespace;
        this.podName = podName;
        this.process = process;
        this.log = log;
        this.commandLine = commandLine;
    }

    /**
     * @param podIp the pod's address: a loopback address of its own (127.0.0.N), so several servers can use the same ports
     * @param claims local directories (Filesystem) or files (Block) standing in for each PVC, by claim name
     * @param launcher how to run the image's command locally: command path to the argv prefix replacing it
     */
    public static LocalPodRunner start(KubernetesClient client, Pod pod, String podIp, Path workDir,
                                       Map<String, Path> claims, Map<String, List<String>> launcher) throws IOException {
        String namespace = pod.getMetadata().getNamespace();
        String name = pod.getMetadata().getName();
        if (pod.getSpec().getNodeName() == null) {
            client.bindings().inNamespace(namespace).resource(new BindingBuilder()
                    .withNewMetadata().withName(name).endMetadata()
                    .withNewTarget().withKind("Node").withName(NODE).endTarget().build()).create();
        }
        Container container = pod.getSpec().getContainers().getFirst();
        Map<String, Path> mounts = new LinkedHashMap<>();
        Map<DownwardAPIVolumeSource, Path> downwardApiVolumes = new LinkedHashMap<>();
        for (Volume volume : pod.getSpec().getVolumes()) {
            Path local = workDir.resolve("volumes").resolve(volume.getName());
            if (volume.getPersistentVolumeClaim() != null) {
                local = claims.get(volume.getPersistentVolumeClaim().getClaimName());
                if (local == null) {
                    throw new IllegalArgumentException("no local stand-in for PVC " + volume.getPersistentVolumeClaim().getClaimName());
                }
            } else if (volume.getSecret() != null) {
                Files.createDirectories(local);
                Secret secret = client.secrets().inNamespace(namespace).withName(volume.getSecret().getSecretName()).get();
                for (var entry : secret.getData().entrySet()) {
                    Files.write(local.resolve(entry.getKey()), Base64.getDecoder().decode(entry.getValue()));
                }
            } else if (volume.getEmptyDir() != null) {
                Files.createDirectories(local);
            } else if (volume.getDownwardAPI() != null) {
                Files.createDirectories(local);
                downwardApiVolumes.put(volume.getDownwardAPI(), local);
            } else {
                throw new IllegalArgumentException("volume kind not played locally: " + volume);
            }
            final Path target = local;
            container.getVolumeMounts().stream().filter(m -> m.getName().equals(volume.getName()))
                    .forEach(m -> mounts.put(m.getMountPath(), target));
            if (container.getVolumeDevices() != null) {
                container.getVolumeDevices().stream().filter(d -> d.getName().equals(volume.getName()))
                        .forEach(d -> mounts.put(d.getDevicePath(), target));
            }
        }
        // Written once every mount is known: a file the server reads may name paths of other volumes.
        for (var downward : downwardApiVolumes.entrySet()) {
            writeDownwardApiFiles(pod, downward.getKey(), downward.getValue(), mounts);
        }
        Map<String, String> env = new LinkedHashMap<>();
        for (EnvVar var : container.getEnv()) {
            if (var.getValue() != null) {
                env.put(var.getName(), expand(var.getValue(), env));
            } else if (var.getValueFrom() != null && var.getValueFrom().getFieldRef() != null
                    && "status.podIP".equals(var.getValueFrom().getFieldRef().getFieldPath())) {
                env.put(var.getName(), podIp);
            } else {
                throw new IllegalArgumentException("env source not played locally: " + var);
            }
        }
        List<String> argv = new ArrayList<>();
        List<String> prefix = launcher.get(container.getCommand().getFirst());
        if (prefix == null || container.getCommand().size() != 1) {
            throw new IllegalArgumentException("unexpected container command " + container.getCommand());
        }
        argv.addAll(prefix);
        for (String arg : container.getArgs()) {
            argv.add(mapPaths(expand(arg, env), mounts));
        }
        Files.createDirectories(workDir);
        Path log = workDir.resolve(name + ".log");
        var builder = new ProcessBuilder(argv).redirectErrorStream(true).redirectOutput(log.toFile());
        builder.environment().putAll(env);
        Process process = builder.start();
        var runner = new LocalPodRunner(client, namespace, name, process, log, argv);
        int port = probePort(container);
        runner.awaitReadyOrExit(podIp, port);
        return runner;
    }

    /** The command line that ran, after expansion and path mapping (for assertions and failure messages). */
    public List<String> commandLine() {
        return commandLine;
    }

    public long pid() {
        return process.pid();
    }

    public boolean alive() {
        return process.isAlive();
    }

    public String log() throws IOException {
        return Files.readString(log);
    }

    private void awaitReadyOrExit(String podIp, int port) throws IOException {
        Instant deadline = Instant.now().plus(READY_TIMEOUT);
        while (Instant.now().isBefore(deadline)) {
            if (!process.isAlive()) {
                reportTerminated(process.exitValue());
                return;
            }
            try (Socket socket = new Socket()) {
                socket.connect(new InetSocketAddress(podIp, port), 200);
                reportRunning(podIp);
                return;
            } catch (IOException notYet) {
                sleep(100);
            }
        }
        throw new AssertionError("server of pod " + podName + " neither ready nor exited within " + READY_TIMEOUT
                + "; command " + commandLine + "; log:\n" + log());
    }

    private void reportRunning(String podIp) {
        String now = Instant.now().toString();
        PodStatus status = new PodStatusBuilder()
                .withPhase("Running").withPodIP(podIp).withHostIP("127.0.0.1").withStartTime(now)
                .withConditions(condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready"))
                .withContainerStatuses(new ContainerStatusBuilder().withName(containerName()).withReady(true).withStarted(true)
                        .withRestartCount(0).withImage(image()).withImageID(image())
                        .withNewState().withNewRunning(now).endState().build())
                .build();
        patchStatus(status);
    }

    private void reportTerminated(int exitCode) throws IOException {
        String now = Instant.now().toString();
        List<String> lines = Files.readAllLines(log);
        String tail = String.join("\n", lines.subList(Math.max(0, lines.size() - 20), lines.size()));
        PodStatus status = new PodStatusBuilder()
                .withPhase("Running").withHostIP("127.0.0.1").withStartTime(now)
                .withConditions(condition("PodScheduled"))
                .withContainerStatuses(new ContainerStatusBuilder().withName(containerName()).withReady(false).withStarted(false)
                        .withRestartCount(1).withImage(image()).withImageID(image())
                        .withNewState().withNewWaiting().withReason("CrashLoopBackOff")
                        .withMessage("back-off 10s restarting failed container").endWaiting().endState()
                        .withNewLastState().withNewTerminated().withExitCode(exitCode).withReason("Error").withMessage(tail)
                        .withStartedAt(now).withFinishedAt(now).endTerminated().endLastState().build())
                .build();
        patchStatus(status);
    }

    private Pod pod() {
        return client.pods().inNamespace(namespace).withName(podName).get();
    }

    private String containerName() {
        return pod().getSpec().getContainers().getFirst().getName();
    }

    private String image() {
        return pod().getSpec().getContainers().getFirst().getImage();
    }

    private void patchStatus(PodStatus status) {
        Pod pod = pod();
        pod.setStatus(status);
        client.pods().inNamespace(namespace).resource(pod).updateStatus();
    }

    private static io.fabric8.kubernetes.api.model.PodCondition condition(String type) {
        return new PodConditionBuilder().withType(type).withStatus("True").withLastTransitionTime(Instant.now().toString()).build();
    }

    private static int probePort(Container container) {
        var port = container.getReadinessProbe().getTcpSocket().getPort();
        if (port.getIntVal() != null) {
            return port.getIntVal();
        }
        return container.getPorts().stream().filter(p -> port.getStrVal().equals(p.getName())).findFirst()
                .orElseThrow(() -> new IllegalArgumentException("no container port named " + port.getStrVal()))
                .getContainerPort();
    }

    /** {@code $(VAR)} references to earlier variables, as the kubelet expands them; unknown ones stay as they are. */
    static String expand(String text, Map<String, String> env) {
        Matcher m = VAR_REF.matcher(text);
        StringBuilder out = new StringBuilder();
        while (m.find()) {
            String value = env.get(m.group(1));
            m.appendReplacement(out, Matcher.quoteReplacement(value == null ? m.group() : value));
        }
        m.appendTail(out);
        return out.toString();
    }

    /** Replaces in-pod paths by their local stand-ins in one pass, so a local path is never mapped again. */
    /**
     * Writes the pod annotations a downward API volume names into files, as the kubelet does. A YAML file's
     * string values get the same path mapping as the arguments (the server's config names paths in the pod).
     */
    private static void writeDownwardApiFiles(Pod pod, DownwardAPIVolumeSource source, Path directory,
                                              Map<String, Path> mounts) throws IOException {
        Pattern annotationRef = Pattern.compile("metadata\\.annotations\\['([^']+)'\\]");
        for (DownwardAPIVolumeFile item : source.getItems()) {
            Matcher ref = item.getFieldRef() == null ? null : annotationRef.matcher(item.getFieldRef().getFieldPath());
            if (ref == null || !ref.matches()) {
                throw new IllegalArgumentException("downward API item not played locally: " + item);
            }
            String value = pod.getMetadata().getAnnotations().getOrDefault(ref.group(1), "");
            if (item.getPath().endsWith(".yaml")) {
                var yaml = new ObjectMapper(new YAMLFactory());
                JsonNode tree = yaml.readTree(value);
                value = yaml.writeValueAsString(mapTextValues(tree, mounts));
            }
            Files.writeString(directory.resolve(item.getPath()), value);
        }
    }

    private static JsonNode mapTextValues(JsonNode node, Map<String, Path> mounts) {
        if (node.isTextual()) {
            return TextNode.valueOf(mapPaths(node.asText(), mounts));
        }
        if (node instanceof ObjectNode object) {
            object.properties().forEach(field -> field.setValue(mapTextValues(field.getValue(), mounts)));
        } else if (node instanceof ArrayNode array) {
            for (int i = 0; i < array.size(); i++) {
                array.set(i, mapTextValues(array.get(i), mounts));
            }
        }
        return node;
    }

    private static String mapPaths(String arg, Map<String, Path> mounts) {
        List<String> inPod = new ArrayList<>(mounts.keySet());
        inPod.sort(java.util.Comparator.comparingInt(String::length).reversed()); // /data/x before /data
        String alternatives = String.join("|", inPod.stream().map(Pattern::quote).toList());
        Matcher m = Pattern.compile("(?<![^=:,\\s])(" + alternatives + ")(?=/|$|,)").matcher(arg);
        StringBuilder out = new StringBuilder();
        while (m.find()) {
            m.appendReplacement(out, Matcher.quoteReplacement(mounts.get(m.group(1)).toString()));
        }
        m.appendTail(out);
        return out.toString();
    }

    /** Stops the server as the kubelet does (SIGTERM, then SIGKILL after the grace period) and waits for it. */
    public int stop() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
        }
        return process.exitValue();
    }

    @Override
    public void close() throws InterruptedException {
        if (process.isAlive()) {
            stop();
        }
    }

    private static void sleep(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted", e);
        }
    }
}
