package io.kubenbd.node.csi;

import io.kubenbd.node.client.HostileServer;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.ReplyType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.IOException;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * A server that breaks the protocol is not a server that went away: the request fails at once
 * (FUSE turns that into EIO for the reader) instead of being retried on new connections for the
 * whole reconnect window.
 */
class ExportConnectionsTest {
    @Test
    @Timeout(value = 5, unit = TimeUnit.SECONDS)
    void aReplyThatBreaksTheProtocolFailsTheRequestAtOnce() throws Exception {
        try (HostileServer server = HostileServer.transmission(ReplyStyle.STRUCTURED, (request, out) -> {
            // Data for bytes the client never asked for.
            HostileServer.structuredHeader(out, 1, ReplyType.OFFSET_DATA, request.cookie(), 8 + 16);
            out.writeLong(request.offset() + 8192);
            out.write(new byte[16]);
        })) {
            VolumeContext context = VolumeContext.parse(Map.of("host", "127.0.0.1", "port", Integer.toString(server.port()),
                    "exportName", "disk", "connections", "1", "tlsMode", "none"));
            try (ExportConnections connections = ExportConnections.open(
                    new ExportDialer("ns/vol", context, null, null, false))) {
                assertThatThrownBy(() -> connections.call(client -> client.read(0, 4096)))
                        .isInstanceOf(IOException.class).hasMessageContaining("outside");
            }
        }
    }
}
