package io.kubenbd.node.server;

import io.kubenbd.node.tls.ServerTls;

import java.util.concurrent.ExecutorService;

/** What every connection handler of one server shares. */
record ServerContext(ExportRegistry exports, ServerSettings settings, ServerTls tls, ExecutorService io,
                     java.util.function.BooleanSupplier shutdownFlag, BufferBudget budget,
                     HandshakeAdmission handshakes) {
    boolean shuttingDown() {
        return shutdownFlag.getAsBoolean();
    }
}
