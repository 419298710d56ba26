package io.kubenbd.node.server;

import io.kubenbd.node.protocol.Limits;
import io.netty.util.internal.PlatformDependent;

import java.time.Duration;

/**
 * Server-wide tunables.
 *
 * @param handshakeTimeout     a client that has not entered transmission by then is dropped
 * @param ioThreads            threads that run storage calls (never the event loops)
 * @param maxInFlight          requests per connection being worked on before reading pauses
 * @param maxInFlightBytes     request and reply bytes per connection held (running, or replies not yet
 *                             written to the socket) before reading pauses
 * @param shutdownGrace        how long SIGTERM waits for in-flight requests
 * @param maxHandshakes        connections in the handshake at once; more are refused
 * @param maxHandshakesPerPeer connections in the handshake at once from one peer address
 * @param bufferBudget         request and reply bytes all connections together may hold; 0 for half
 *                             of the direct memory limit
 * @param writeTimeout         a connection whose replies have not been read for this long is closed
 * @param idleTimeout          a connection with no request and nothing in flight for this long is
 *                             closed; zero for never
 */
public record ServerSettings(Duration handshakeTimeout, int ioThreads, int maxInFlight, long maxInFlightBytes,
                             Duration shutdownGrace, int maxHandshakes, int maxHandshakesPerPeer,
                             long bufferBudget, Duration writeTimeout, Duration idleTimeout) {
    public static final int DEFAULT_MAX_HANDSHAKES = 512;
    public static final int DEFAULT_MAX_HANDSHAKES_PER_PEER = 64;
    public static final Duration DEFAULT_WRITE_TIMEOUT = Duration.ofSeconds(60);
    public static final Duration DEFAULT_IDLE_TIMEOUT = Duration.ZERO;

    public static ServerSettings defaults() {
        return new ServerSettings(Duration.ofSeconds(10), Math.max(4, 2 * Runtime.getRuntime().availableProcessors()),
                64, 64L * 1024 * 1024, Duration.ofSeconds(30));
    }

    /** The given limits with the defaults for the handshake caps, the buffer budget and the timeouts. */
    public ServerSettings(Duration handshakeTimeout, int ioThreads, int maxInFlight, long maxInFlightBytes,
                          Duration shutdownGrace) {
        this(handshakeTimeout, ioThreads, maxInFlight, maxInFlightBytes, shutdownGrace, DEFAULT_MAX_HANDSHAKES,
                DEFAULT_MAX_HANDSHAKES_PER_PEER, 0, DEFAULT_WRITE_TIMEOUT, DEFAULT_IDLE_TIMEOUT);
    }

    public ServerSettings {
        if (ioThreads < 1 || maxInFlight < 1 || maxInFlightBytes < Limits.MAX_PAYLOAD) {
            throw new IllegalArgumentException("io threads and in-flight limits must allow at least one full request");
        }
        if (maxHandshakes < 1 || maxHandshakesPerPeer < 1) {
            throw new IllegalArgumentException("handshake limits must be at least 1");
        }
        if (bufferBudget < 0) {
            throw new IllegalArgumentException("buffer budget must not be negative, got " + bufferBudget);
        }
        if (writeTimeout.isNegative() || writeTimeout.isZero() || idleTimeout.isNegative()) {
            throw new IllegalArgumentException("write timeout must be positive and idle timeout not negative");
        }
    }

    /** The buffer budget in bytes: as given, or half of the JVM's direct memory limit. */
    public long bufferBudgetBytes() {
        return bufferBudget > 0 ? bufferBudget : Math.max(1L << 20, PlatformDependent.maxDirectMemory() / 2);
    }

    public ServerSettings withHandshakeLimits(int perServer, int perPeer) {
        return new ServerSettings(handshakeTimeout, ioThreads, maxInFlight, maxInFlightBytes, shutdownGrace, perServer,
                perPeer, bufferBudget, writeTimeout, idleTimeout);
    }

    public ServerSettings withBufferBudget(long bytes) {
        return new ServerSettings(handshakeTimeout, ioThreads, maxInFlight, maxInFlightBytes, shutdownGrace,
                maxHandshakes, maxHandshakesPerPeer, bytes, writeTimeout, idleTimeout);
    }

    public ServerSettings withTimeouts(Duration write, Duration idle) {
        return new ServerSettings(handshakeTimeout, ioThreads, maxInFlight, maxInFlightBytes, shutdownGrace,
                maxHandshakes, maxHandshakesPerPeer, bufferBudget, write, idle);
    }
}
