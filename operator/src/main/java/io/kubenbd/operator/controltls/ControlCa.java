package io.kubenbd.operator.controltls;

import io.fabric8.kubernetes.api.model.Secret;
import io.fabric8.kubernetes.api.model.SecretBuilder;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.fabric8.kubernetes.client.dsl.base.PatchContext;
import io.fabric8.kubernetes.client.dsl.base.PatchType;
import io.grpc.ChannelCredentials;
import io.grpc.TlsChannelCredentials;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.TrustManagerFactory;
import java.net.HttpURLConnection;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The CA of the servers' control API, kept in the Secret {@value #SECRET} of the operator's
 * namespace: made on first use, valid {@link #CA_VALIDITY}, replaced by a new one when two thirds
 * of that have passed (the old certificate stays trusted, as {@code previous-ca.crt}, until it
 * expires). It issues the operator's own client certificate, held in memory only and renewed
 * likewise, and the servers' certificates ({@link #LEAF_VALIDITY}). Every method may be called
 * from several reconcile threads.
 */
public final class ControlCa {
    public static final String SECRET = "kube-nbd-control-ca";
    public static final Duration CA_VALIDITY = Duration.ofDays(365);
    public static final Duration LEAF_VALIDITY = Duration.ofDays(30);
    /** The subject of the operator's client certificate. */
    public static final String CLIENT_NAME = "kube-nbd-operator";
    static final String CA_CERT = "ca.crt";
    static final String CA_KEY = "ca.key";
    static final String PREVIOUS_CA_CERT = "previous-ca.crt";
    private static final Logger LOG = LoggerFactory.getLogger(ControlCa.class);

    /** The CA to issue with, and every CA certificate still trusted (the current one first). */
    public record Authority(CertificateAuthority ca, List<X509Certificate> trusted) {
        public String trustedPem() {
            return Pem.certificates(trusted);
        }
    }

    private final KubernetesClient client;
    private final String namespace;
    private Authority authority;
    private IssuedCertificate clientCertificate;

    public ControlCa(KubernetesClient client, String namespace) {
        this.client = client;
        this.namespace = namespace;
    }

    /** The current authority, from the Secret, made or renewed first when needed. */
    public synchronized Authority authority() {
        Instant now = Instant.now();
        if (authority == null || CertificateAuthority.renewalDue(authority.ca().certificate(), now)) {
            authority = load(now);
        }
        return authority;
    }

    /** A new certificate for the control API server clients know as {@code dnsName}. */
    public IssuedCertificate issueServer(String dnsName) {
        return authority().ca().issueServer(dnsName, LEAF_VALIDITY, Instant.now());
    }

    /** What the operator calls servers with: its client certificate, trusting only the control CA. */
    public synchronized ChannelCredentials clientCredentials() {
        Authority current = authority();
        Instant now = Instant.now();
        if (clientCertificate == null || CertificateAuthority.renewalDue(clientCertificate.certificate(), now)
                || !issuedBy(clientCertificate.certificate(), current.ca())) {
            clientCertificate = current.ca().issueClient(CLIENT_NAME, LEAF_VALIDITY, now);
            LOG.info("issued the operator's control API client certificate, valid until {}", clientCertificate.certificate().getNotAfter());
        }
        try {
            KeyStore identity = KeyStore.getInstance("PKCS12");
            identity.load(null, null);
            identity.setKeyEntry("operator", clientCertificate.key(), new char[0],
                    new X509Certificate[]{clientCertificate.certificate(), current.ca().certificate()});
            KeyManagerFactory keys = KeyManagerFactory.getInstance("PKIX");
            keys.init(identity, new char[0]);
            KeyStore anchors = KeyStore.getInstance("PKCS12");
            anchors.load(null, null);
            for (int i = 0; i < current.trusted().size(); i++) {
                anchors.setCertificateEntry("ca-" + i, current.trusted().get(i));
            }
            TrustManagerFactory trust = TrustManagerFactory.getInstance("PKIX");
            trust.init(anchors);
            return TlsChannelCredentials.newBuilder().keyManager(keys.getKeyManagers())
                    .trustManager(trust.getTrustManagers()).build();
        } catch (GeneralSecurityException | java.io.IOException e) {
            throw new IllegalStateException("cannot set up the control API client's TLS: " + e.getMessage(), e);
        }
    }

    /** Whether {@code certificate} carries {@code ca}'s signature. */
    public static boolean issuedBy(X509Certificate certificate, CertificateAuthority ca) {
        try {
            certificate.verify(ca.certificate().getPublicKey());
            return true;
        } catch (GeneralSecurityException e) {
            return false;
        }
    }

    private Authority load(Instant now) {
        Secret secret = client.secrets().inNamespace(namespace).withName(SECRET).get();
        if (secret == null) {
            CertificateAuthority made = CertificateAuthority.create("kube-nbd control CA", CA_VALIDITY, now);
            try {
                client.secrets().inNamespace(namespace).resource(new SecretBuilder()
                        .withNewMetadata().withName(SECRET).withNamespace(namespace)
                        .withLabels(Map.of("app.kubernetes.io/managed-by", "kube-nbd-operator",
                                "app.kubernetes.io/component", "control-ca"))
                        .endMetadata()
                        .withType("Opaque")
                        .withData(data(made, null))
                        .build()).create();
            } catch (KubernetesClientException e) {
                if (e.getCode() == HttpURLConnection.HTTP_CONFLICT) {
                    return parse(client.secrets().inNamespace(namespace).withName(SECRET).get(), now); // another replica made it
                }
                throw e;
            }
            LOG.info("made the control API CA in Secret {}/{}, valid until {}", namespace, SECRET, made.certificate().getNotAfter());
            return new Authority(made, List.of(made.certificate()));
        }
        Authority found = parse(secret, now);
        if (!CertificateAuthority.renewalDue(found.ca().certificate(), now)) {
            return found;
        }
        CertificateAuthority next = CertificateAuthority.create("kube-nbd control CA", CA_VALIDITY, now);
        // A merge patch carrying the resourceVersion is refused if another replica renewed first.
        String patch = "{\"metadata\":{\"resourceVersion\":\"" + secret.getMetadata().getResourceVersion() + "\"},\"data\":"
                + io.fabric8.kubernetes.client.utils.Serialization.asJson(data(next, found.ca().certificate())) + "}";
        try {
            client.secrets().inNamespace(namespace).withName(SECRET).patch(PatchContext.of(PatchType.JSON_MERGE), patch);
        } catch (KubernetesClientException e) {
            if (e.getCode() == HttpURLConnection.HTTP_CONFLICT) {
                return parse(client.secrets().inNamespace(namespace).withName(SECRET).get(), now);
            }
            throw e;
        }
        LOG.info("renewed the control API CA in Secret {}/{}: the new one is valid until {}, the old one stays trusted until {}",
                namespace, SECRET, next.certificate().getNotAfter(), found.ca().certificate().getNotAfter());
        return new Authority(next, List.of(next.certificate(), found.ca().certificate()));
    }

    private Authority parse(Secret secret, Instant now) {
        Map<String, String> data = secret.getData() == null ? Map.of() : secret.getData();
        try {
            if (!data.containsKey(CA_CERT) || !data.containsKey(CA_KEY)) {
                throw new GeneralSecurityException("it lacks " + CA_CERT + " or " + CA_KEY);
            }
            CertificateAuthority ca = CertificateAuthority.fromPem(Pem.fromSecretData(data.get(CA_CERT)),
                    Pem.fromSecretData(data.get(CA_KEY)));
            List<X509Certificate> trusted = new ArrayList<>(List.of(ca.certificate()));
            if (data.containsKey(PREVIOUS_CA_CERT)) {
                Pem.readCertificates(Pem.fromSecretData(data.get(PREVIOUS_CA_CERT))).stream()
                        .filter(previous -> previous.getNotAfter().toInstant().isAfter(now))
                        .forEach(trusted::add);
            }
            return new Authority(ca, List.copyOf(trusted));
        } catch (GeneralSecurityException | IllegalArgumentException e) {
            throw new IllegalStateException("Secret " + namespace + "/" + SECRET + " holds no usable control API CA ("
                    + e.getMessage() + "); delete it to have a new CA made (the servers get new certificates)", e);
        }
    }

    private static Map<String, String> data(CertificateAuthority ca, X509Certificate previous) {
        Map<String, String> data = new LinkedHashMap<>();
        data.put(CA_CERT, Pem.toSecretData(Pem.certificates(List.of(ca.certificate()))));
        data.put(CA_KEY, Pem.toSecretData(Pem.privateKey(ca.key())));
        if (previous != null) {
            data.put(PREVIOUS_CA_CERT, Pem.toSecretData(Pem.certificates(List.of(previous))));
        }
        return data;
    }
}
