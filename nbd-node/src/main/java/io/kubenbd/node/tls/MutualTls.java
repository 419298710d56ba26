package io.kubenbd.node.tls;

import org.bouncycastle.openssl.PEMKeyPair;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509ExtendedKeyManager;
import javax.net.ssl.X509ExtendedTrustManager;
import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.Principal;
import java.security.PrivateKey;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.List;
import java.util.function.Consumer;

/**
 * Both halves of mutual TLS from PEM files: this side's certificate chain and key, and the CA
 * the other side's certificate must chain to. The files are re-read when they change (a
 * Kubernetes Secret volume update), checked at most every
 * {@link ServerTlsCredentials#CHECK_INTERVAL_NANOS} by a new handshake, so certificates and CA
 * rotate without a restart. The JDK checks the peer: a client certificate needs extended key
 * usage clientAuth (when it names any), a server certificate serverAuth and the name connected to.
 * Keys may be PKCS#8, PKCS#1 or SEC1 (EC).
 */
public final class MutualTls {
    private static final String ALIAS = "identity";

    private record Managers(X509ExtendedKeyManager keys, X509ExtendedTrustManager trust, String caSubjects) {
    }

    private final ReloadingFile<Managers> managers;

    private MutualTls(ReloadingFile<Managers> managers) {
        this.managers = managers;
    }

    /**
     * @param onReload told, in one line, of each reload and each failed one (never with key material)
     * @throws IOException a file is missing or does not hold what it should (the message names it)
     */
    public static MutualTls fromFiles(Path certificate, Path key, Path ca, Consumer<String> onReload) throws IOException {
        for (Path file : List.of(certificate, key, ca)) {
            if (!Files.isRegularFile(file)) {
                throw new IOException("no such file: " + file);
            }
        }
        return new MutualTls(new ReloadingFile<>(List.of(certificate, key, ca), () -> load(certificate, key, ca),
                ServerTlsCredentials.CHECK_INTERVAL_NANOS, onReload));
    }

    /** This side's certificate and key, as they are in the files now. */
    public X509ExtendedKeyManager keyManager() {
        return new CurrentKeyManager();
    }

    /** Trusts certificates that chain to the CA file as it is now. */
    public X509ExtendedTrustManager trustManager() {
        return new CurrentTrustManager();
    }

    /** The subjects of the trusted CA certificates, for a log line. */
    public String caSubjects() {
        return managers.current().caSubjects();
    }

    private static Managers load(Path certificate, Path key, Path ca) throws IOException {
        List<X509Certificate> chain = certificates(certificate);
        List<X509Certificate> authorities = certificates(ca);
        PrivateKey privateKey = privateKey(key);
        try {
            KeyStore identity = KeyStore.getInstance("PKCS12");
            identity.load(null, null);
            identity.setKeyEntry(ALIAS, privateKey, new char[0], chain.toArray(X509Certificate[]::new));
            KeyManagerFactory keys = KeyManagerFactory.getInstance("PKIX");
            keys.init(identity, new char[0]);
            KeyStore anchors = KeyStore.getInstance("PKCS12");
            anchors.load(null, null);
            for (int i = 0; i < authorities.size(); i++) {
                anchors.setCertificateEntry("ca-" + i, authorities.get(i));
            }
            TrustManagerFactory trust = TrustManagerFactory.getInstance("PKIX");
            trust.init(anchors);
            return new Managers((X509ExtendedKeyManager) keys.getKeyManagers()[0],
                    (X509ExtendedTrustManager) trust.getTrustManagers()[0],
                    String.join(", ", authorities.stream().map(c -> c.getSubjectX500Principal().getName()).toList()));
        } catch (GeneralSecurityException e) {
            throw new IOException("cannot use certificate " + certificate + " with key " + key + " and CA " + ca
                    + ": " + e.getMessage(), e);
        }
    }

    private static List<X509Certificate> certificates(Path file) throws IOException {
        try (InputStream in = Files.newInputStream(file)) {
            List<X509Certificate> certificates = CertificateFactory.getInstance("X.509").generateCertificates(in).stream()
                    .map(X509Certificate.class::cast).toList();
            if (certificates.isEmpty()) {
                throw new IOException(file + " holds no PEM certificate");
            }
            return certificates;
        } catch (NoSuchFileException e) {
            throw new IOException("no such file: " + file, e);
        } catch (CertificateException e) {
            throw new IOException(file + " holds no readable PEM certificate: " + e.getMessage(), e);
        }
    }

    private static PrivateKey privateKey(Path file) throws IOException {
        Object item;
        try (Reader reader = Files.newBufferedReader(file, StandardCharsets.US_ASCII);
             PEMParser pem = new PEMParser(reader)) {
            // Parameters (EC PARAMETERS) or certificates may come before the key.
            do {
                item = pem.readObject();
            } while (item != null && !(item instanceof PrivateKeyInfo) && !(item instanceof PEMKeyPair));
        } catch (NoSuchFileException e) {
            throw new IOException("no such file: " + file, e);
        } catch (IOException | RuntimeException e) {
            // Say which file, not what the parser read.
            throw new IOException(file + " holds no readable PEM private key");
        }
        JcaPEMKeyConverter converter = new JcaPEMKeyConverter();
        return switch (item) {
            case PrivateKeyInfo info -> converter.getPrivateKey(info);
            case PEMKeyPair pair -> converter.getKeyPair(pair).getPrivate();
            case null, default -> throw new IOException(file + " holds no unencrypted PEM private key");
        };
    }

    /** Asks the files' current state on every call, so a handshake after a rotation uses the new material. */
    private final class CurrentKeyManager extends X509ExtendedKeyManager {
        private X509ExtendedKeyManager keys() {
            return managers.current().keys();
        }

        @Override
        public String[] getClientAliases(String keyType, Principal[] issuers) {
            return keys().getClientAliases(keyType, issuers);
        }

        @Override
        public String chooseClientAlias(String[] keyType, Principal[] issuers, Socket socket) {
            return keys().chooseClientAlias(keyType, issuers, socket);
        }

        @Override
        public String chooseEngineClientAlias(String[] keyType, Principal[] issuers, SSLEngine engine) {
            return keys().chooseEngineClientAlias(keyType, issuers, engine);
        }

        @Override
        public String[] getServerAliases(String keyType, Principal[] issuers) {
            return keys().getServerAliases(keyType, issuers);
        }

        @Override
        public String chooseServerAlias(String keyType, Principal[] issuers, Socket socket) {
            return keys().chooseServerAlias(keyType, issuers, socket);
        }

        @Override
        public String chooseEngineServerAlias(String keyType, Principal[] issuers, SSLEngine engine) {
            return keys().chooseEngineServerAlias(keyType, issuers, engine);
        }

        @Override
        public X509Certificate[] getCertificateChain(String alias) {
            return keys().getCertificateChain(alias);
        }

        @Override
        public PrivateKey getPrivateKey(String alias) {
            return keys().getPrivateKey(alias);
        }
    }

    private final class CurrentTrustManager extends X509ExtendedTrustManager {
        private X509ExtendedTrustManager trust() {
            return managers.current().trust();
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, Socket socket) throws CertificateException {
            trust().checkClientTrusted(chain, authType, socket);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, Socket socket) throws CertificateException {
            trust().checkServerTrusted(chain, authType, socket);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine) throws CertificateException {
            trust().checkClientTrusted(chain, authType, engine);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine) throws CertificateException {
            trust().checkServerTrusted(chain, authType, engine);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            trust().checkClientTrusted(chain, authType);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) throws CertificateException {
            trust().checkServerTrusted(chain, authType);
        }

        /**
         * None named: a TLS server sends these names in its certificate request, and netty
         * fixes them when it builds the context, so after a CA rotation a client holding only a
         * certificate of the new CA would find no match and send none. Verification still
         * uses the current CA.
         */
        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }
}
