package io.kubenbd.node.server;

import io.kubenbd.node.protocol.Limits;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Bytes of request and reply data all connections of one server may hold at once: a WRITE's
 * payload from the moment its header is read, a READ's (or BLOCK_STATUS's) reply until it has
 * been written to the socket. Sized from the direct memory limit, so more connections share
 * it rather than multiply it. A connection that does not get its bytes waits, queued; released
 * bytes go to waiters in arrival order, first fit, and nobody passes the queue on the fast path.
 * Clients that never read their replies keep what they hold until the write timeout, so the
 * budget keeps room for others: beyond its first request a connection holds at most its
 * {@link #share}; requests above {@link #LARGE_REQUEST} may fill only half of the budget; and
 * the last quarter is kept for the first small request (up to {@link #RESERVED_REQUEST}) of a
 * connection that holds nothing, so a well-behaved client gets through one request at a time.
 */
final class BufferBudget {
    private static final Logger log = LoggerFactory.getLogger(BufferBudget.class);
    static final long LARGE_REQUEST = 1 << 20;
    static final long RESERVED_REQUEST = 256 << 10;
    private static final long LOG_INTERVAL_NANOS = 10_000_000_000L;

    /** A connection waiting for bytes; {@link #granted} is called once they are reserved for it. */
    interface Waiter {
        long wanted();

        /** Whether the connection holds nothing else, so a request up to {@link #RESERVED_REQUEST} may use the reserve. */
        boolean holdsNothing();

        void granted();
    }

    private final long capacity;
    private final long largeCapacity;
    private final long generalCapacity;
    private final AtomicLong used = new AtomicLong();
    private final ConcurrentLinkedQueue<Waiter> queue = new ConcurrentLinkedQueue<>();
    private final AtomicLong lastFullLog = new AtomicLong(System.nanoTime() - LOG_INTERVAL_NANOS);
    private final AtomicInteger connections = new AtomicInteger();

    BufferBudget(long capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("buffer budget must be positive, got " + capacity);
        }
        this.capacity = capacity;
        this.generalCapacity = capacity - capacity / 4;
        this.largeCapacity = Math.max(capacity / 2, Math.min(generalCapacity, Limits.MAX_PAYLOAD));
    }

    long capacity() {
        return capacity;
    }

    long used() {
        return used.get();
    }

    /** A connection entered transmission: it shares the budget from now on. */
    void join() {
        connections.incrementAndGet();
    }

    void leave() {
        connections.decrementAndGet();
    }

    /**
     * What one connection may hold beyond its first request: an equal part of the budget, with
     * room kept for one more connection, so connections that hold theirs (clients that never read)
     * still leave a part for the next one.
     */
    long share() {
        return capacity / (connections.get() + 1);
    }

    /** What one request is charged: never more than the budget, so any single request can run. */
    long charge(long bytes) {
        return Math.min(bytes, bytes > LARGE_REQUEST ? largeCapacity : generalCapacity);
    }

    /** Takes {@code bytes} (from {@link #charge}) if nobody waits and they fit. */
    boolean tryAcquire(long bytes, boolean holdsNothing) {
        return queue.isEmpty() && take(bytes, holdsNothing);
    }

    /** Queues {@code waiter}; it is granted as soon as its bytes fit (perhaps at once, on this thread). */
    void await(Waiter waiter) {
        queue.add(waiter);
        long now = System.nanoTime();
        long last = lastFullLog.get();
        if (now - last >= LOG_INTERVAL_NANOS && lastFullLog.compareAndSet(last, now)) {
            log.info("buffer budget of {} MiB in use ({} MiB held): connections wait for replies to be read "
                    + "and requests to finish", capacity >> 20, used.get() >> 20);
        }
        grant();
    }

    /** Takes {@code waiter} out of the queue; false if it was granted meanwhile (it then owns its bytes). */
    boolean cancel(Waiter waiter) {
        synchronized (queue) {
            return queue.remove(waiter);
        }
    }

    void release(long bytes) {
        if (bytes == 0) {
            return;
        }
        used.addAndGet(-bytes);
        if (!queue.isEmpty()) {
            grant();
        }
    }

    private boolean take(long bytes, boolean holdsNothing) {
        long limit = bytes > LARGE_REQUEST ? largeCapacity
                : holdsNothing && bytes <= RESERVED_REQUEST ? capacity : generalCapacity;
        while (true) {
            long now = used.get();
            if (now + bytes > limit) {
                return false;
            }
            if (used.compareAndSet(now, now + bytes)) {
                return true;
            }
        }
    }

    private void grant() {
        List<Waiter> granted = null;
        synchronized (queue) {
            for (Iterator<Waiter> it = queue.iterator(); it.hasNext(); ) {
                Waiter waiter = it.next();
                if (take(waiter.wanted(), waiter.holdsNothing())) {
                    it.remove();
                    if (granted == null) {
                        granted = new ArrayList<>();
                    }
                    granted.add(waiter);
                }
            }
        }
        if (granted != null) {
            granted.forEach(Waiter::granted);
        }
    }
}
