package io.kubenbd.node.testing;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

/**
 * Test certificates made with GnuTLS' certtool: a CA as {@code DIR/NAME-cert.pem} and
 * {@code DIR/NAME-key.pem}, and certificates it signs from a certtool template (30 days).
 */
public final class CertTool {
    private static final Duration LIMIT = Duration.ofSeconds(60);

    private CertTool() {}

    public static void ca(Path dir, String name, String cn) throws Exception {
        Path template = dir.resolve(name + ".info");
        Files.writeString(template, "cn = " + cn + "\nca\ncert_signing_key\nexpiration_days = 30\n");
        PeerCommand.run(LIMIT, "certtool", "--generate-privkey", "--outfile", dir.resolve(name + "-key.pem").toString())
                .assertSuccess();
        PeerCommand.run(LIMIT, "certtool", "--generate-self-signed", "--load-privkey", dir.resolve(name + "-key.pem").toString(),
                "--template", template.toString(), "--outfile", dir.resolve(name + "-cert.pem").toString()).assertSuccess();
    }

    /** {@code DIR/NAME-cert.pem} and {@code DIR/NAME-key.pem}, signed by the CA {@code caDir/ca-cert.pem}. */
    public static void cert(Path dir, String name, Path caDir, String ca, String template) throws Exception {
        Path info = dir.resolve(name + ".info");
        Files.writeString(info, template + "expiration_days = 30\n");
        PeerCommand.run(LIMIT, "certtool", "--generate-privkey", "--outfile", dir.resolve(name + "-key.pem").toString())
                .assertSuccess();
        PeerCommand.run(LIMIT, "certtool", "--generate-certificate", "--load-privkey", dir.resolve(name + "-key.pem").toString(),
                "--load-ca-certificate", caDir.resolve(ca + "-cert.pem").toString(),
                "--load-ca-privkey", caDir.resolve(ca + "-key.pem").toString(),
                "--template", info.toString(), "--outfile", dir.resolve(name + "-cert.pem").toString()).assertSuccess();
    }
}
