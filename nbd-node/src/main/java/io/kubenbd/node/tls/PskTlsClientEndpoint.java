package io.kubenbd.node.tls;

import org.bouncycastle.tls.AlertDescription;
import org.bouncycastle.tls.AlertLevel;
import org.bouncycastle.tls.BasicTlsPSKExternal;
import org.bouncycastle.tls.PRFAlgorithm;
import org.bouncycastle.tls.PSKTlsClient;
import org.bouncycastle.tls.ProtocolVersion;
import org.bouncycastle.tls.PskKeyExchangeMode;
import org.bouncycastle.tls.TlsPSKIdentity;
import org.bouncycastle.tls.crypto.TlsCrypto;
import org.bouncycastle.tls.crypto.TlsSecret;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Vector;

/**
 * The client end of a TLS-PSK session, for Bouncy Castle's {@code TlsClientProtocol} (the
 * JDK has no PSK cipher suites). Offers TLS 1.3 with the key as an external PSK (SHA-256,
 * psk_dhe_ke then psk_ke) and TLS 1.2 PSK suites, AES-GCM first. Crypto is JCA, so AES-GCM
 * runs on the JDK's AES-NI intrinsics ({@link JdkFirstCrypto}). One instance per handshake.
 *
 * <p>Key copies: each {@link TlsPSKIdentity#getPSK()} call hands out a fresh copy, which Bouncy
 * Castle wipes after computing the TLS 1.2 premaster secret; the TLS 1.3 secret is destroyed by
 * {@link #wipe()}. The key itself is never logged or put in a message.
 */
public final class PskTlsClientEndpoint extends PSKTlsClient {

    private final PskKey key;
    private final ProtocolVersion[] versions;
    private final int[] suites;
    private TlsSecret external;
    private String alert;

    /** Offers TLS 1.3 and 1.2. */
    public PskTlsClientEndpoint(PskKey key) {
        this(key, ProtocolVersion.TLSv13.downTo(ProtocolVersion.TLSv12), PskCipherSuites.preferred());
    }

    /**
     * Offers exactly {@code versions} and {@code suites}, in that order (tests and benchmarks
     * pin TLS 1.2 or one suite with this).
     */
    public PskTlsClientEndpoint(PskKey key, ProtocolVersion[] versions, int... suites) {
        this(JdkFirstCrypto.create(), key, versions, suites);
    }

    private PskTlsClientEndpoint(TlsCrypto crypto, PskKey key, ProtocolVersion[] versions, int[] suites) {
        super(crypto, new CopyingIdentity(key));
        this.key = key;
        this.versions = versions.clone();
        this.suites = suites.clone();
    }

    /** The suites offered by default, most preferred first. */
    public static int[] defaultCipherSuites() {
        return PskCipherSuites.preferred();
    }

    public String identity() {
        return key.identity();
    }

    @Override
    protected ProtocolVersion[] getSupportedVersions() {
        return versions.clone();
    }

    @Override
    protected int[] getSupportedCipherSuites() {
        return suites.clone();
    }

    @Override
    public short[] getPskKeyExchangeModes() {
        return new short[] {PskKeyExchangeMode.psk_dhe_ke, PskKeyExchangeMode.psk_ke};
    }

    @Override
    public Vector getExternalPSKs() {
        if (!ProtocolVersion.contains(versions, ProtocolVersion.TLSv13)) {
            return null;
        }
        byte[] copy = key.key();
        try {
            external = getCrypto().createSecret(copy);
        } finally {
            Arrays.fill(copy, (byte) 0);
        }
        Vector<Object> psks = new Vector<>(1);
        psks.add(new BasicTlsPSKExternal(key.identity().getBytes(StandardCharsets.UTF_8), external,
                PRFAlgorithm.tls13_hkdf_sha256));
        return psks;
    }

    @Override
    public void notifyAlertRaised(short alertLevel, short alertDescription, String message, Throwable cause) {
        if (alertLevel == AlertLevel.fatal) {
            alert = "client sent alert " + AlertDescription.getName(alertDescription) + (message == null ? "" : " (" + message + ")");
        }
    }

    @Override
    public void notifyAlertReceived(short alertLevel, short alertDescription) {
        if (alertLevel == AlertLevel.fatal) {
            alert = "server sent alert " + AlertDescription.getName(alertDescription);
        }
    }

    /** The IANA name of a cipher suite number, e.g. {@code TLS_AES_128_GCM_SHA256}. */
    public static String cipherSuiteName(int suite) {
        return TlsNames.cipherSuite(suite);
    }

    /** The last fatal alert sent or received, for an error message; null if none. */
    public String lastAlert() {
        return alert;
    }

    /** The negotiated version and suite; valid once the handshake is complete. */
    public NegotiatedTls negotiated() {
        return new NegotiatedTls(TlsNames.protocol(context.getServerVersion()),
                TlsNames.cipherSuite(context.getSecurityParametersConnection().getCipherSuite()));
    }

    /** Destroys the key copy held for TLS 1.3; call once the handshake is over (or failed). */
    public void wipe() {
        if (external != null) {
            external.destroy();
            external = null;
        }
    }

    @Override
    public String toString() {
        return "PskTlsClientEndpoint[" + key.identity() + "]";
    }

    /** Hands Bouncy Castle a fresh copy of the key each time; it wipes the copy after use. */
    private static final class CopyingIdentity implements TlsPSKIdentity {
        private final PskKey key;

        CopyingIdentity(PskKey key) {
            this.key = key;
        }

        @Override
        public void skipIdentityHint() { }

        @Override
        public void notifyIdentityHint(byte[] hint) { }

        @Override
        public byte[] getPSKIdentity() {
            return key.identity().getBytes(StandardCharsets.UTF_8);
        }

        @Override
        public byte[] getPSK() {
            return key.key();
        }
    }
}
