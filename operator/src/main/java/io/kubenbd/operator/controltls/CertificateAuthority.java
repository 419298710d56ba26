package io.kubenbd.operator.controltls;

import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.asn1.x509.BasicConstraints;
import org.bouncycastle.asn1.x509.ExtendedKeyUsage;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.GeneralName;
import org.bouncycastle.asn1.x509.GeneralNames;
import org.bouncycastle.asn1.x509.KeyPurposeId;
import org.bouncycastle.asn1.x509.KeyUsage;
import org.bouncycastle.cert.CertIOException;
import org.bouncycastle.cert.X509v3CertificateBuilder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cert.jcajce.JcaX509ExtensionUtils;
import org.bouncycastle.cert.jcajce.JcaX509v3CertificateBuilder;
import org.bouncycastle.operator.OperatorCreationException;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;

import java.math.BigInteger;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.SecureRandom;
import java.security.cert.X509Certificate;
import java.security.spec.ECGenParameterSpec;
import java.time.Duration;
import java.time.Instant;
import java.util.Date;
import java.util.List;

/**
 * A small CA for one purpose: certificates for the control API, ECDSA P-256 throughout. Server
 * certificates carry one DNS name and are good for TLS servers only; client certificates are
 * good for TLS clients only, so a server's key (readable by whoever reads its namespace's
 * Secrets) cannot call another server's control API. {@link #toString()} shows no key.
 */
public record CertificateAuthority(X509Certificate certificate, PrivateKey key) {
    private static final SecureRandom RANDOM = new SecureRandom();
    /** Certificates start a little in the past, for clocks that lag the operator's. */
    private static final Duration BACKDATE = Duration.ofMinutes(5);

    public static CertificateAuthority create(String commonName, Duration validity, Instant now) {
        KeyPair pair = newKeyPair();
        X500Name name = new X500Name("CN=" + commonName);
        return new CertificateAuthority(build(name, name, pair, pair.getPrivate(), null, validity, now, builder -> {
            builder.addExtension(Extension.basicConstraints, true, new BasicConstraints(0));
            builder.addExtension(Extension.keyUsage, true, new KeyUsage(KeyUsage.keyCertSign | KeyUsage.cRLSign));
        }), pair.getPrivate());
    }

    public static CertificateAuthority fromPem(String certificatePem, String keyPem) throws GeneralSecurityException {
        List<X509Certificate> certificates = Pem.readCertificates(certificatePem);
        if (certificates.size() != 1) {
            throw new GeneralSecurityException("expected one CA certificate, found " + certificates.size());
        }
        return new CertificateAuthority(certificates.getFirst(), Pem.readPrivateKey(keyPem));
    }

    /** A certificate for a control API server that clients know by {@code dnsName}. */
    public IssuedCertificate issueServer(String dnsName, Duration validity, Instant now) {
        return issue("CN=" + dnsName, KeyPurposeId.id_kp_serverAuth, new GeneralNames(new GeneralName(GeneralName.dNSName, dnsName)),
                validity, now);
    }

    /** A certificate for a control API client. */
    public IssuedCertificate issueClient(String commonName, Duration validity, Instant now) {
        return issue("CN=" + commonName, KeyPurposeId.id_kp_clientAuth, null, validity, now);
    }

    /** Whether two thirds of the certificate's lifetime have passed. */
    public static boolean renewalDue(X509Certificate certificate, Instant now) {
        long from = certificate.getNotBefore().getTime();
        long until = certificate.getNotAfter().getTime();
        return now.toEpochMilli() >= from + (until - from) / 3 * 2;
    }

    @Override
    public String toString() {
        return "CertificateAuthority[" + certificate.getSubjectX500Principal().getName() + ", until " + certificate.getNotAfter() + "]";
    }

    private IssuedCertificate issue(String subject, KeyPurposeId purpose, GeneralNames names, Duration validity, Instant now) {
        KeyPair pair = newKeyPair();
        X509Certificate issued = build(X500Name.getInstance(certificate.getSubjectX500Principal().getEncoded()),
                new X500Name(subject), pair, key, certificate, validity, now, builder -> {
                    builder.addExtension(Extension.basicConstraints, true, new BasicConstraints(false));
                    builder.addExtension(Extension.keyUsage, true, new KeyUsage(KeyUsage.digitalSignature));
                    builder.addExtension(Extension.extendedKeyUsage, false, new ExtendedKeyUsage(purpose));
                    if (names != null) {
                        builder.addExtension(Extension.subjectAlternativeName, false, names);
                    }
                });
        return new IssuedCertificate(issued, pair.getPrivate());
    }

    private interface Extensions {
        void add(X509v3CertificateBuilder builder) throws CertIOException;
    }

    private static X509Certificate build(X500Name issuer, X500Name subject, KeyPair pair, PrivateKey signer,
                                         X509Certificate issuerCertificate, Duration validity, Instant now, Extensions extensions) {
        try {
            JcaX509ExtensionUtils utils = new JcaX509ExtensionUtils();
            X509v3CertificateBuilder builder = new JcaX509v3CertificateBuilder(issuer, new BigInteger(127, RANDOM).add(BigInteger.ONE),
                    Date.from(now.minus(BACKDATE)), Date.from(now.plus(validity)), subject, pair.getPublic());
            builder.addExtension(Extension.subjectKeyIdentifier, false, utils.createSubjectKeyIdentifier(pair.getPublic()));
            if (issuerCertificate != null) {
                builder.addExtension(Extension.authorityKeyIdentifier, false, utils.createAuthorityKeyIdentifier(issuerCertificate));
            }
            extensions.add(builder);
            return new JcaX509CertificateConverter().getCertificate(
                    builder.build(new JcaContentSignerBuilder("SHA256withECDSA").build(signer)));
        } catch (GeneralSecurityException | OperatorCreationException | CertIOException e) {
            throw new IllegalStateException("cannot issue a certificate for " + subject + ": " + e.getMessage(), e);
        }
    }

    private static KeyPair newKeyPair() {
        try {
            KeyPairGenerator generator = KeyPairGenerator.getInstance("EC");
            generator.initialize(new ECGenParameterSpec("secp256r1"), RANDOM);
            return generator.generateKeyPair();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("the JDK cannot make P-256 keys: " + e.getMessage(), e);
        }
    }
}
