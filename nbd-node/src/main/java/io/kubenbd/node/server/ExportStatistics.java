package io.kubenbd.node.server;

import java.util.concurrent.atomic.LongAdder;

/** Counters of one export since the server started; updated from I/O threads, read by the control API. */
public final class ExportStatistics {
    private final LongAdder bytesRead = new LongAdder();
    private final LongAdder bytesWritten = new LongAdder();
    private final LongAdder requests = new LongAdder();
    private final LongAdder errors = new LongAdder();

    void read(long bytes) {
        bytesRead.add(bytes);
    }

    void written(long bytes) {
        bytesWritten.add(bytes);
    }

    void request(boolean failed) {
        requests.increment();
        if (failed) {
            errors.increment();
        }
    }

    public long bytesRead() {
        return bytesRead.sum();
    }

    public long bytesWritten() {
        return bytesWritten.sum();
    }

    public long requests() {
        return requests.sum();
    }

    public long errors() {
        return errors.sum();
    }
}
