package io.kubenbd.operator.controltls;

import org.junit.jupiter.api.Test;

import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;
import java.security.KeyStore;
import java.security.cert.CertificateException;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.time.Instant;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The control API's CA: what it issues, how the JDK judges it, PEM round trips and when to renew. */
class CertificateAuthorityTest {
    private static final Instant NOW = Instant.parse("2026-12-07T12:00:00Z");

    @Test
    void serverAndClientCertificatesAreEachGoodForTheirSideOnly() throws Exception {
        Instant now = Instant.now(); // the JDK checks validity at the real time
        CertificateAuthority ca = CertificateAuthority.create("kube-nbd control CA", Duration.ofDays(365), now);
        assertThat(ca.certificate().getBasicConstraints()).as("a CA").isGreaterThanOrEqualTo(0);
        IssuedCertificate server = ca.issueServer("disk.vms.control.kubenbd.io", Duration.ofDays(30), now);
        IssuedCertificate client = ca.issueClient("kube-nbd-operator", Duration.ofDays(30), now);

        assertThat(server.certificate().getSubjectAlternativeNames()).singleElement()
                .isEqualTo(List.of(2, "disk.vms.control.kubenbd.io"));
        assertThat(server.certificate().getExtendedKeyUsage()).containsExactly("1.3.6.1.5.5.7.3.1");
        assertThat(client.certificate().getExtendedKeyUsage()).containsExactly("1.3.6.1.5.5.7.3.2");
        assertThat(client.certificate().getSubjectX500Principal().getName()).isEqualTo("CN=kube-nbd-operator");
        server.certificate().verify(ca.certificate().getPublicKey());

        // The JDK's checks at each end of the handshake.
        X509TrustManager trust = trustManager(ca.certificate());
        trust.checkClientTrusted(new X509Certificate[]{client.certificate()}, "EC");
        trust.checkServerTrusted(new X509Certificate[]{server.certificate()}, "ECDHE_ECDSA");
        assertThatThrownBy(() -> trust.checkClientTrusted(new X509Certificate[]{server.certificate()}, "EC"))
                .as("a server's certificate is no client certificate").isInstanceOf(CertificateException.class);
        assertThatThrownBy(() -> trust.checkServerTrusted(new X509Certificate[]{client.certificate()}, "ECDHE_ECDSA"))
                .as("the operator's certificate is no server certificate").isInstanceOf(CertificateException.class);
        CertificateAuthority other = CertificateAuthority.create("kube-nbd control CA", Duration.ofDays(365), now);
        assertThatThrownBy(() -> trust.checkClientTrusted(
                new X509Certificate[]{other.issueClient("kube-nbd-operator", Duration.ofDays(30), now).certificate()}, "EC"))
                .as("another CA of the same name").isInstanceOf(CertificateException.class);
    }

    @Test
    void pemRoundTripsKeepCertificatesAndKeys() throws Exception {
        CertificateAuthority ca = CertificateAuthority.create("kube-nbd control CA", Duration.ofDays(365), NOW);
        String certificates = Pem.certificates(List.of(ca.certificate(), ca.certificate()));
        assertThat(certificates).startsWith("-----BEGIN CERTIFICATE-----\n").endsWith("-----END CERTIFICATE-----\n");
        assertThat(Pem.readCertificates(certificates)).containsExactly(ca.certificate(), ca.certificate());
        String key = Pem.privateKey(ca.key());
        assertThat(key).startsWith("-----BEGIN PRIVATE KEY-----\n");
        assertThat(Pem.readPrivateKey(key)).isEqualTo(ca.key());
        assertThat(CertificateAuthority.fromPem(Pem.certificates(List.of(ca.certificate())), key)).isEqualTo(ca);
        assertThatThrownBy(() -> Pem.readPrivateKey("not a key")).hasMessage("no PEM private key (PKCS#8) found");
    }

    @Test
    void renewalIsDueAfterTwoThirdsOfTheLifetime() throws Exception {
        CertificateAuthority ca = CertificateAuthority.create("kube-nbd control CA", Duration.ofDays(365), NOW);
        X509Certificate leaf = ca.issueServer("a.b.control.kubenbd.io", Duration.ofDays(30), NOW).certificate();
        assertThat(CertificateAuthority.renewalDue(leaf, NOW.plus(Duration.ofDays(19)))).isFalse();
        assertThat(CertificateAuthority.renewalDue(leaf, NOW.plus(Duration.ofDays(21)))).isTrue();
        assertThat(CertificateAuthority.renewalDue(ca.certificate(), NOW.plus(Duration.ofDays(240)))).isFalse();
        assertThat(CertificateAuthority.renewalDue(ca.certificate(), NOW.plus(Duration.ofDays(250)))).isTrue();
    }

    private static X509TrustManager trustManager(X509Certificate ca) throws Exception {
        KeyStore anchors = KeyStore.getInstance("PKCS12");
        anchors.load(null, null);
        anchors.setCertificateEntry("ca", ca);
        TrustManagerFactory factory = TrustManagerFactory.getInstance("PKIX");
        factory.init(anchors);
        return (X509TrustManager) factory.getTrustManagers()[0];
    }
}
