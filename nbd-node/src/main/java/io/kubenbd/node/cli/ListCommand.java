package io.kubenbd.node.cli;

import io.kubenbd.node.client.ExportInfo;
import io.kubenbd.node.client.NbdClient;
import io.kubenbd.node.client.OptionRefusedException;
import io.kubenbd.node.protocol.OptionReply;
import io.kubenbd.node.protocol.ReplyStyle;
import io.kubenbd.node.protocol.TransmissionFlags;
import io.kubenbd.node.tls.ClientTlsCredentials;
import io.kubenbd.node.tls.NegotiatedTls;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "list", mixinStandardHelpOptions = true, usageHelpAutoWidth = true,
        description = "List the exports of an NBD server with size, flags, block sizes and meta contexts, "
                + "in the layout of 'qemu-nbd --list'. Negotiates extended headers when the server has them. "
                + "nbds:// starts TLS first (NBD_OPT_STARTTLS) with a pre-shared key or X.509 certificates.")
final class ListCommand implements Callable<Integer> {

    @Parameters(paramLabel = "URI", description = "nbd://HOST[:PORT] (port 10809 by default), or "
            + "nbds://[IDENTITY@]HOST[:PORT][?tls-psk-file=FILE] for TLS")
    String uri;

    @Option(names = "--tls-psk", paramLabel = "FILE",
            description = "TLS-PSK keys, 'identity:hexkey' lines (psktool's format); needs nbds://")
    Path tlsPsk;

    @Option(names = "--tls-username", paramLabel = "ID",
            description = "the PSK identity to use (default: the URI's user part, else the file's only identity)")
    String tlsUsername;

    @Option(names = "--tls-ca", paramLabel = "FILE",
            description = "X.509: CA certificates (PEM) the server's certificate must chain to; needs nbds://")
    Path tlsCa;

    @Option(names = "--tls-cert", paramLabel = "FILE", description = "X.509: this client's certificate (PEM)")
    Path tlsCert;

    @Option(names = "--tls-key", paramLabel = "FILE", description = "X.509: this client's private key (PEM, PKCS#8)")
    Path tlsKey;

    @Override
    public Integer call() throws Exception {
        NbdUri address = NbdUri.parse(uri);
        ClientTlsCredentials credentials = credentials(address);
        PrintStream out = System.out;
        try (NbdClient client = NbdClient.connect(address.host(), address.port(), Duration.ofSeconds(10))) {
            if (credentials != null) {
                NegotiatedTls tls = client.startTls(credentials);
                System.err.println("tls: " + tls);
            }
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

    /** The TLS credentials the URI and options ask for; null for nbd://. */
    ClientTlsCredentials credentials(NbdUri address) throws IOException {
        boolean x509 = tlsCa != null || tlsCert != null || tlsKey != null;
        Path pskFile = tlsPsk != null ? tlsPsk : address.tlsPskFile();
        if (!address.tls()) {
            if (x509 || tlsPsk != null || tlsUsername != null) {
                throw new IllegalArgumentException("TLS options need an nbds:// URI; nbd:// is always plaintext");
            }
            return null;
        }
        if (tlsPsk != null && address.tlsPskFile() != null && !tlsPsk.equals(address.tlsPskFile())) {
            throw new IllegalArgumentException("two PSK files: --tls-psk " + tlsPsk + " and tls-psk-file="
                    + address.tlsPskFile());
        }
        if (x509 && pskFile != null) {
            throw new IllegalArgumentException("choose TLS-PSK (--tls-psk, tls-psk-file) or X.509 (--tls-ca), not both");
        }
        if (x509) {
            if (tlsCa == null) {
                throw new IllegalArgumentException("--tls-cert/--tls-key need --tls-ca");
            }
            if ((tlsCert == null) != (tlsKey == null)) {
                throw new IllegalArgumentException("--tls-cert and --tls-key go together");
            }
            if (tlsUsername != null || address.tlsUsername() != null) {
                throw new IllegalArgumentException("a TLS identity (user name) is for TLS-PSK, not X.509");
            }
            return new ClientTlsCredentials.X509(tlsCa, tlsCert, tlsKey, true);
        }
        if (pskFile == null) {
            throw new IllegalArgumentException("nbds:// needs credentials: ?tls-psk-file=FILE, --tls-psk FILE or --tls-ca FILE");
        }
        String identity = address.tlsUsername();
        if (tlsUsername != null && identity != null && !tlsUsername.equals(identity)) {
            throw new IllegalArgumentException("two TLS identities: '" + identity + "' in the URI and --tls-username "
                    + tlsUsername);
        }
        return ClientTlsCredentials.Psk.fromFile(pskFile, identity != null ? identity : tlsUsername);
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
