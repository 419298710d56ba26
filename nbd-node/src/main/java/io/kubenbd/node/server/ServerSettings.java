package io.kubenbd.node.server;

import java.time.Duration;

/**
 * Server-wide tunables.
 *
 * @param handshakeTimeout   a client that has not entered transmission by then is dropped
 * @param ioThreads          threads that run storage calls (never the event loops)
 * @param maxInFlight        requests per connection being worked on before reading pauses
 * @param maxInFlightBytes   read/write bytes per connection being worked on before reading pauses
 * @param shutdownGrace      how long SIGTERM waits for in-flight requests
 */
public record ServerSettings(Duration handshakeTimeout, int ioThreads, int maxInFlight, long maxInFlightBytes,
                             Duration shutdownGrace) {
    public static ServerSettings defaults() {
        return new ServerSettings(Duration.ofSeconds(10), Math.max(4, 2 * Runtime.getRuntime().availableProcessors()),
                64, 64L * 1024 * 1024, Duration.ofSeconds(30));
    }

    public ServerSettings {
        if (ioThreads < 1 || maxInFlight < 1 || maxInFlightBytes < io.kubenbd.node.protocol.Limits.MAX_PAYLOAD) {
            throw new IllegalArgumentException("io threads and in-flight limits must allow at least one full request");
        }
    }
}
