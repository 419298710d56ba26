package io.kubenbd.node.tls;

import org.bouncycastle.tls.AlertDescription;
import org.bouncycastle.tls.AlertLevel;
import org.bouncycastle.tls.BasicTlsPSKExternal;
import org.bouncycastle.tls.PRFAlgorithm;
import org.bouncycastle.tls.PSKTlsServer;
import org.bouncycastle.tls.ProtocolVersion;
import org.bouncycastle.tls.PskIdentity;
import org.bouncycastle.tls.PskKeyExchangeMode;
import org.bouncycastle.tls.TlsPSKExternal;
import org.bouncycastle.tls.TlsPSKIdentityManager;
import org.bouncycastle.tls.crypto.TlsCrypto;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Vector;

/**
 * The server end of one TLS-PSK handshake, for Bouncy Castle's TLS engine: TLS 1.3 with an
 * external PSK and (EC)DHE, or the TLS 1.2 PSK suites GnuTLS clients (qemu, libnbd) offer.
 * Suites are chosen in this server's order ({@link PskCipherSuites}), AES-GCM first: the
 * JDK's AES-GCM uses the CPU's AES instructions, while ChaCha20 costs several times more CPU.
 */
public final class PskTlsServerEndpoint extends PSKTlsServer {
    /** Shared: creating a JCA crypto object per handshake would redo provider lookups. */
    private static final TlsCrypto CRYPTO = JdkFirstCrypto.create();

    private final PskKeyFile keys;
    private String identity;
    private String failure;

    public PskTlsServerEndpoint(PskKeyFile keys) {
        super(CRYPTO, new KeyFileIdentities(keys));
        this.keys = keys;
    }

    /** The identity the client authenticated with, once the handshake has chosen one. */
    public String identity() {
        if (identity == null && pskIdentityManager instanceof KeyFileIdentities ids) {
            identity = ids.chosen;
        }
        return identity;
    }

    /** Why the handshake failed, as a TLS alert a person can read; null if it did not. */
    public String failure() {
        return failure;
    }

    /** The protocol and suite in use, e.g. {@code TLSv1.3 TLS_AES_128_GCM_SHA256}. */
    public NegotiatedTls negotiated() {
        return new NegotiatedTls(TlsNames.protocol(context.getServerVersion()),
                TlsNames.cipherSuite(context.getSecurityParametersConnection().getCipherSuite()));
    }

    @Override
    protected ProtocolVersion[] getSupportedVersions() {
        return ProtocolVersion.TLSv13.downTo(ProtocolVersion.TLSv12);
    }

    @Override
    protected int[] getSupportedCipherSuites() {
        return PskCipherSuites.preferred();
    }

    @Override
    protected boolean preferLocalCipherSuites() {
        return true;
    }

    @Override
    public short[] getPskKeyExchangeModes() {
        return new short[] {PskKeyExchangeMode.psk_dhe_ke, PskKeyExchangeMode.psk_ke};
    }

    @Override
    public TlsPSKExternal getExternalPSK(Vector identities) {
        for (Object o : identities) {
            byte[] wanted = ((PskIdentity) o).getIdentity();
            String name = new String(wanted, StandardCharsets.UTF_8);
            var key = keys.find(name);
            if (key.isPresent()) {
                byte[] secret = key.get().key();
                try {
                    identity = name;
                    return new BasicTlsPSKExternal(wanted, getCrypto().createSecret(secret), PRFAlgorithm.tls13_hkdf_sha256);
                } finally {
                    Arrays.fill(secret, (byte) 0);
                }
            }
        }
        failure = "no key for the offered PSK identities";
        return null;
    }

    @Override
    public void notifyAlertRaised(short level, short description, String message, Throwable cause) {
        if (level == AlertLevel.fatal && failure == null) {
            failure = "sent " + AlertDescription.getText(description) + (message == null ? "" : " (" + message + ")");
        }
    }

    @Override
    public void notifyAlertReceived(short level, short description) {
        if (level == AlertLevel.fatal && failure == null) {
            failure = "client sent " + AlertDescription.getText(description);
        }
    }

    /** TLS 1.2 PSK lookup; remembers which identity was used. */
    private static final class KeyFileIdentities implements TlsPSKIdentityManager {
        private final PskKeyFile keys;
        private String chosen;

        KeyFileIdentities(PskKeyFile keys) {
            this.keys = keys;
        }

        @Override
        public byte[] getHint() {
            return null;
        }

        @Override
        public byte[] getPSK(byte[] identity) {
            String name = new String(identity, StandardCharsets.UTF_8);
            var key = keys.find(name);
            if (key.isEmpty()) {
                return null;
            }
            chosen = name;
            return key.get().key();
        }
    }
}
