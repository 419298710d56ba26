package io.kubenbd.node.server;

import java.util.concurrent.ExecutorService;

/** What every connection handler of one server shares. */
record ServerContext(ExportRegistry exports, ServerSettings settings, ExecutorService io,
                     java.util.function.BooleanSupplier shutdownFlag) {
    boolean shuttingDown() {
        return shutdownFlag.getAsBoolean();
    }
}
