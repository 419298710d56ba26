package io.kubenbd.node.cli;

import io.kubenbd.node.client.ExportInfo;
import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.client.OptionRefusedException;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.TransmissionFlags;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

import java.io.PrintStream;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "list", mixinStandardHelpOptions = true, usageHelpAutoWidth = true,
        description = "List the exports of an NBD server with size, flags, block sizes and meta contexts, "
                + "in the layout of 'qemu-nbd --list'. Negotiates extended headers when the server has them.")
final class ListCommand implements Callable<Integer> {

    @Parameters(paramLabel = "URI", description = "nbd://HOST[:PORT] (port 10809 by default)")
    String uri;

    @Override
    public Integer call() throws Exception {
        NbdUri address = NbdUri.parse(uri);
        PrintStream out = System.out;
        try (NbdClient client = NbdClient.connect(address.host(), address.port(), Duration.ofSeconds(10))) {
            ReplyStyle style = client.negotiateBestReplies();
            List<OptionReply.Server> exports = client.listExports();
            out.println("exports available: " + exports.size());
            for (OptionReply.Server entry : exports) {
                printExport(out, client, style, entry);
            }
            client.abort();
        }
        return 0;
    }

    private static void printExport(PrintStream out, NbdClient client, ReplyStyle style, OptionReply.Server entry)
            throws Exception {
        out.println(" export: '" + entry.name() + "'");
        if (!entry.description().isEmpty()) {
            out.println("  description: " + entry.description());
        }
        ExportInfo info;
        try {
            info = client.info(entry.name());
        } catch (OptionRefusedException e) {
            out.println("  unavailable: " + e.getMessage());
            return;
        }
        out.println("  size:  " + info.size());
        out.println("  flags: 0x" + Integer.toHexString(info.flags()) + " ( "
                + String.join(" ", TransmissionFlags.names(info.flags())) + " )");
        if (info.maximumBlock() > 0) {
            out.println("  min block: " + info.minimumBlock());
            out.println("  opt block: " + info.preferredBlock());
            out.println("  max block: " + info.maximumBlock());
        }
        out.println("  transaction size: " + (style == ReplyStyle.EXTENDED ? "64-bit" : "32-bit"));
        if (style != ReplyStyle.SIMPLE) {
            List<OptionReply.MetaContext> contexts = client.listMetaContexts(entry.name(), List.of());
            out.println("  available meta contexts: " + contexts.size());
            contexts.forEach(c -> out.println("   " + c.name()));
        }
    }
}
