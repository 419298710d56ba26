package io.kubenbd.operator.runtime;

import io.kubenbd.operator.controltls.ControlCa;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.javaoperatorsdk.operator.Operator;
import io.javaoperatorsdk.operator.api.config.LeaderElectionConfiguration;
import io.javaoperatorsdk.operator.monitoring.micrometer.MicrometerMetrics;
import io.kubenbd.operator.reconciler.ExportMetrics;
import io.kubenbd.operator.reconciler.NbdExportReconciler;
import io.micrometer.core.instrument.binder.jvm.JvmGcMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmMemoryMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmThreadMetrics;
import io.micrometer.core.instrument.binder.system.ProcessorMetrics;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;

/** One operator instance: started by {@link #start}, stopped (informers, executors, HTTP) by {@link #close}. */
public final class KubeNbdOperator implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(KubeNbdOperator.class);

    private final Operator operator;
    private final HealthEndpoint http;
    private final PrometheusMeterRegistry registry;
    /** close() runs from the shutdown hook and again when the command's try block ends. */
    private final java.util.concurrent.atomic.AtomicBoolean closed = new java.util.concurrent.atomic.AtomicBoolean();

    private KubeNbdOperator(Operator operator, HealthEndpoint http, PrometheusMeterRegistry registry) {
        this.operator = operator;
        this.http = http;
        this.registry = registry;
    }

    public static KubeNbdOperator start(KubernetesClient client, OperatorOptions options) throws IOException {
        var registry = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);
        new JvmMemoryMetrics().bindTo(registry);
        new JvmGcMetrics().bindTo(registry);
        new JvmThreadMetrics().bindTo(registry);
        new ProcessorMetrics().bindTo(registry);
        Operator operator = new Operator(o -> {
            o.withKubernetesClient(client)
                    .withCloseClientOnStop(false)
                    // Reconcile counts and latency per controller; per-resource meters would grow with the exports.
                    .withMetrics(MicrometerMetrics.withoutPerResourceMetrics(registry))
                    .withConcurrentReconciliationThreads(options.reconcileThreads());
            if (options.leaseNamespace() != null) {
                o.withLeaderElectionConfiguration(new LeaderElectionConfiguration(options.leaseName(),
                        options.leaseNamespace(), LeaderElectionConfiguration.LEASE_DURATION_DEFAULT_VALUE,
                        LeaderElectionConfiguration.RENEW_DEADLINE_DEFAULT_VALUE,
                        LeaderElectionConfiguration.RETRY_PERIOD_DEFAULT_VALUE, options.identity(), null,
                        options.exitOnLostLease()));
            }
        });
        var controlCa = new ControlCa(client, options.controlCaNamespace());
        operator.register(new NbdExportReconciler(options.server(), options.volumePolicy(), new ExportMetrics(registry),
                controlCa), c -> {
            if (!options.namespaces().isEmpty()) {
                c.settingNamespaces(options.namespaces());
            }
        });
        HealthEndpoint http = null;
        if (options.httpPort() >= 0) {
            http = HealthEndpoint.start(new InetSocketAddress(options.httpBind(), options.httpPort()), operator, registry);
        }
        operator.start();
        LOG.info("operator started: identity={}, namespaces={}, leader election {}, server image {}, PersistentVolumes of class {} "
                        + "pre-bound within the export's namespace and {}", options.identity(),
                options.namespaces().isEmpty() ? "all" : options.namespaces(),
                options.leaseNamespace() == null ? "off" : "on (Lease " + options.leaseNamespace() + "/" + options.leaseName() + ")",
                options.server().image(), options.volumePolicy().storageClassName(),
                options.volumePolicy().consumerNamespaces().isEmpty() ? "no other" : options.volumePolicy().consumerNamespaces());
        return new KubeNbdOperator(operator, http, registry);
    }

    /** The port of the HTTP endpoint, or -1 when it is off. */
    public int httpPort() {
        return http == null ? -1 : http.port();
    }

    public PrometheusMeterRegistry registry() {
        return registry;
    }

    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        operator.stop();
        if (http != null) {
            http.close();
        }
        registry.close();
        LOG.info("operator stopped");
    }
}
