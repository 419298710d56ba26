package io.kubenbd.operator.testing;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Where the etcd, kube-apiserver and kube-controller-manager binaries of {@link KubeTestCluster}
 * are. They are built from source by {@value #SCRIPT} into a cache outside the repository, so
 * this class looks where that script puts them, and runs the script when a binary is missing
 * rather than skipping the tests: a skipped integration test looks like a passing one.
 *
 * <p>Each binary is, in order of preference: the path in the environment variable the script's
 * {@code --print-env} prints ({@code KUBE_NBD_K8S_BIN_KUBE_APISERVER}, ...), or
 * {@code ${KUBE_NBD_CACHE_DIR:-~/.cache/kube-nbd}/bin/<name>-<version>/<name>} with the versions
 * the script uses ({@code KUBE_NBD_KUBE_VERSION}, {@code KUBE_NBD_ETCD_VERSION},
 * {@code KUBE_NBD_CSI_ATTACHER_VERSION}). {@link #csiAttacher} finds the CSI external-attacher the
 * same way, for the tests that run it against the cluster.
 */
record KubeBinaries(Path etcd, Path kubeApiserver, Path kubeControllerManager) {

    static final String SCRIPT = "scripts/k8s-test-binaries.sh";

    private static final String ETCD = "etcd";
    private static final String KUBE_APISERVER = "kube-apiserver";
    private static final String KUBE_CONTROLLER_MANAGER = "kube-controller-manager";
    private static final String CSI_ATTACHER = "csi-attacher";
    private static final List<String> COMPONENTS = List.of(ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER);

    /** A first build compiles kube-apiserver and kube-controller-manager from source: minutes. */
    private static final Duration BUILD_TIMEOUT = Duration.ofMinutes(30);

    /** The Kubernetes version the script builds, and so the version the cluster reports. */
    static String kubeVersion() {
        return env("KUBE_NBD_KUBE_VERSION", "v1.34.4");
    }

    static String etcdVersion() {
        return env("KUBE_NBD_ETCD_VERSION", "v3.6.16");
    }

    /**
     * Finds the binaries, building the missing ones with {@value #SCRIPT}; the build log goes to
     * {@code logDir}. Fails, naming the script, when they can be neither found nor built.
     */
    static KubeBinaries locate(Path logDir) {
        buildMissing(COMPONENTS, logDir);
        return new KubeBinaries(path(ETCD), path(KUBE_APISERVER), path(KUBE_CONTROLLER_MANAGER));
    }

    /** The csi-attacher binary (kubernetes-csi's external-attacher), built like the others when missing. */
    static Path csiAttacher(Path logDir) {
        buildMissing(List.of(CSI_ATTACHER), logDir);
        return path(CSI_ATTACHER);
    }

    private static void buildMissing(List<String> components, Path logDir) {
        List<String> missing = new ArrayList<>();
        for (String component : components) {
            String override = System.getenv(envName(component));
            if (override != null && !override.isBlank()) {
                if (!Files.isExecutable(Path.of(override))) {
                    throw new IllegalStateException(envName(component) + "=" + override
                            + " is not an executable file; unset it, or set it to what `bash " + SCRIPT
                            + " --print-env` prints");
                }
            } else if (!Files.isExecutable(cachedPath(component))) {
                missing.add(component);
            }
        }
        if (!missing.isEmpty()) {
            build(missing, logDir);
        }
    }

    private static void build(List<String> missing, Path logDir) {
        Path repository = findRepository(missing);
        List<String> command = new ArrayList<>(List.of("bash", repository.resolve(SCRIPT).toString()));
        command.addAll(missing);
        LoggedProcess script = LoggedProcess.start("k8s-test-binaries", logDir, command);
        try {
            if (!script.waitFor(BUILD_TIMEOUT)) {
                script.stop();
                throw new IllegalStateException(missingMessage(missing) + "; " + SCRIPT + " did not finish within "
                        + BUILD_TIMEOUT.toMinutes() + " min\n" + script.logTail());
            }
        } catch (InterruptedException e) {
            script.stop();
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while building " + missing + " with " + SCRIPT, e);
        }
        if (script.exitValue() != 0) {
            throw new IllegalStateException(missingMessage(missing) + "; " + SCRIPT + " failed with exit code "
                    + script.exitValue() + "\n" + script.logTail());
        }
    }

    /** The repository root: the first directory at or above the working directory holding the script. */
    private static Path findRepository(List<String> missing) {
        Path start = Path.of("").toAbsolutePath();
        for (Path dir = start; dir != null; dir = dir.getParent()) {
            if (Files.isRegularFile(dir.resolve(SCRIPT))) {
                return dir;
            }
        }
        throw new IllegalStateException(missingMessage(missing) + "; cannot build them from here: " + SCRIPT
                + " is neither in " + start + " nor in a directory above it");
    }

    private static Path path(String component) {
        String override = System.getenv(envName(component));
        Path path = override != null && !override.isBlank() ? Path.of(override) : cachedPath(component);
        if (!Files.isExecutable(path)) {
            throw new IllegalStateException(missingMessage(List.of(component)) + " even after running " + SCRIPT);
        }
        return path;
    }

    private static String missingMessage(List<String> components) {
        List<String> described = components.stream()
                .map(c -> c + " " + version(c) + " (" + cachedPath(c) + ")")
                .toList();
        return "Kubernetes test binaries missing: " + String.join(", ", described)
                + ". Build them from the repository root with: bash " + SCRIPT + " " + String.join(" ", components);
    }

    private static Path cachedPath(String component) {
        String defaultCacheDir = Path.of(System.getProperty("user.home"), ".cache", "kube-nbd").toString();
        return Path.of(env("KUBE_NBD_CACHE_DIR", defaultCacheDir), "bin", component + "-" + version(component), component);
    }

    private static String version(String component) {
        return switch (component) {
            case ETCD -> etcdVersion();
            case CSI_ATTACHER -> env("KUBE_NBD_CSI_ATTACHER_VERSION", "v4.13.0");
            default -> kubeVersion();
        };
    }

    /** The variable the script's {@code --print-env} sets, e.g. {@code KUBE_NBD_K8S_BIN_KUBE_APISERVER}. */
    private static String envName(String component) {
        return "KUBE_NBD_K8S_BIN_" + component.replace('-', '_').toUpperCase(Locale.ROOT);
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isBlank() ? fallback : value;
    }
}
