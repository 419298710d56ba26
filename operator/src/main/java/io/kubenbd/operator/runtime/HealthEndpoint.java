package io.kubenbd.operator.runtime;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.javaoperatorsdk.operator.Operator;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;

/**
 * {@code /healthz} (liveness: the informers are healthy), {@code /readyz} (the operator started)
 * and {@code /metrics} (Prometheus text) on the JDK's small HTTP server; three plain routes need
 * no web framework.
 */
final class HealthEndpoint implements AutoCloseable {
    private final HttpServer server;

    private HealthEndpoint(HttpServer server) {
        this.server = server;
    }

    static HealthEndpoint start(InetSocketAddress address, Operator operator, PrometheusMeterRegistry registry) throws IOException {
        HttpServer server = HttpServer.create(address, 16);
        server.createContext("/healthz", exchange -> {
            var info = operator.getRuntimeInfo();
            boolean healthy = !info.isStarted() || info.allEventSourcesAreHealthy();
            reply(exchange, healthy ? 200 : 503, healthy ? "ok\n" : "unhealthy event sources: " + info.unhealthyEventSources() + "\n",
                    "text/plain");
        });
        server.createContext("/readyz", exchange -> {
            boolean started = operator.getRuntimeInfo().isStarted();
            reply(exchange, started ? 200 : 503, started ? "ok\n" : "starting\n", "text/plain");
        });
        server.createContext("/metrics", exchange -> reply(exchange, 200, registry.scrape(),
                "text/plain; version=0.0.4; charset=utf-8"));
        server.setExecutor(Executors.newSingleThreadExecutor(r -> Thread.ofPlatform().daemon().name("http").unstarted(r)));
        server.start();
        return new HealthEndpoint(server);
    }

    int port() {
        return server.getAddress().getPort();
    }

    private static void reply(HttpExchange exchange, int status, String body, String contentType) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", contentType);
        exchange.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }

    @Override
    public void close() {
        server.stop(0);
    }
}
