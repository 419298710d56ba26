package io.kubenbd.operator.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.ParameterContext;
import org.junit.jupiter.api.extension.ParameterResolver;

/**
 * Injects a {@link KubeTestCluster} into test constructors and methods. Starting a control plane
 * takes seconds, so all test classes of a run share one, started when the first test asks for
 * it. It lives in the root context's store, which JUnit closes (and so stops the cluster) when
 * the whole run ends. Tests isolate themselves with {@link KubeTestCluster#createNamespace}.
 *
 * <pre>{@code
 * @ExtendWith(KubeTestClusterExtension.class)
 * class SomeIT {
 *     @Test
 *     void test(KubeTestCluster cluster) { ... }
 * }
 * }</pre>
 */
public final class KubeTestClusterExtension implements ParameterResolver {

    private static final ExtensionContext.Namespace NAMESPACE =
            ExtensionContext.Namespace.create(KubeTestClusterExtension.class);

    /** etcd writes on every API change; in memory, writes cost no disk I/O. */
    private static final Path SHARED_MEMORY = Path.of("/dev/shm");

    @Override
    public boolean supportsParameter(ParameterContext parameterContext, ExtensionContext extensionContext) {
        return parameterContext.getParameter().getType() == KubeTestCluster.class;
    }

    @Override
    public KubeTestCluster resolveParameter(ParameterContext parameterContext, ExtensionContext extensionContext) {
        return extensionContext.getRoot().getStore(NAMESPACE)
                .computeIfAbsent(StartAttempt.class, key -> StartAttempt.run(), StartAttempt.class)
                .cluster();
    }

    /**
     * The run's one attempt to start the cluster. A failure is kept as well: JUnit's store does
     * not remember exceptions, and retrying a start that failed once would fail every test slowly.
     */
    private record StartAttempt(KubeTestCluster started, RuntimeException failure) implements AutoCloseable {

        static StartAttempt run() {
            try {
                return new StartAttempt(KubeTestCluster.start(newWorkDir()), null);
            } catch (RuntimeException e) {
                return new StartAttempt(null, e);
            }
        }

        KubeTestCluster cluster() {
            if (failure != null) {
                throw new IllegalStateException("the Kubernetes test cluster did not start: " + failure.getMessage(),
                        failure);
            }
            return started;
        }

        @Override
        public void close() {
            if (started != null) {
                started.close();
            }
        }
    }

    private static Path newWorkDir() {
        Path parent = Files.isDirectory(SHARED_MEMORY) && Files.isWritable(SHARED_MEMORY)
                ? SHARED_MEMORY
                : Path.of(System.getProperty("java.io.tmpdir"));
        try {
            return Files.createTempDirectory(parent, "kube-test-cluster-");
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create a work directory in " + parent, e);
        }
    }
}
