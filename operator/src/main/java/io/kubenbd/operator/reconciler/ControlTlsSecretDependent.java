package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.Secret;
import io.fabric8.kubernetes.api.model.SecretBuilder;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.CRUDKubernetesDependentResource;
import io.javaoperatorsdk.operator.processing.event.ResourceID;
import io.kubenbd.operator.controltls.CertificateAuthority;
import io.kubenbd.operator.controltls.ControlCa;
import io.kubenbd.operator.controltls.IssuedCertificate;
import io.kubenbd.operator.controltls.Pem;
import io.kubenbd.operator.model.NbdExport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.security.GeneralSecurityException;
import java.security.cert.X509Certificate;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The server's control API credentials, a {@code kubernetes.io/tls} Secret mounted into the
 * server pod: {@code tls.crt} and {@code tls.key} issued by the control CA for
 * {@link ExportResources#controlServerName}, and {@code ca.crt}, the CA certificates the operator's
 * client certificate must chain to. The certificate is kept while it is the current CA's and two
 * thirds of its life remain; then a new one is issued, which the server re-reads from the volume
 * without a restart. The CA's key never leaves the operator's namespace.
 */
public final class ControlTlsSecretDependent extends CRUDKubernetesDependentResource<Secret, NbdExport> {
    static final String CERTIFICATE = "tls.crt";
    static final String KEY = "tls.key";
    static final String CA = "ca.crt";
    private static final Logger LOG = LoggerFactory.getLogger(ControlTlsSecretDependent.class);

    private final ControlCa controlCa;

    public ControlTlsSecretDependent(ControlCa controlCa) {
        super(Secret.class);
        this.controlCa = controlCa;
    }

    @Override
    protected Secret desired(NbdExport export, Context<NbdExport> context) {
        ControlCa.Authority authority = controlCa.authority();
        String trusted = Pem.toSecretData(authority.trustedPem());
        Map<String, String> data = getSecondaryResource(export, context)
                .map(Secret::getData)
                .filter(current -> stillGood(current, trusted, authority.ca(), ExportResources.controlServerName(export)))
                .orElseGet(() -> issue(export, trusted));
        return new SecretBuilder()
                .withMetadata(ExportResources.metadata(export, ExportResources.controlTlsSecretName(export)))
                .withType("kubernetes.io/tls")
                .withData(data)
                .build();
    }

    /** Two Secrets of the export are watched (this and the PSK): this one is found by name, without computing the desired state. */
    @Override
    protected ResourceID targetSecondaryResourceID(NbdExport export, Context<NbdExport> context) {
        return new ResourceID(ExportResources.controlTlsSecretName(export), export.getMetadata().getNamespace());
    }

    private Map<String, String> issue(NbdExport export, String trusted) {
        IssuedCertificate issued = controlCa.issueServer(ExportResources.controlServerName(export));
        LOG.info("issued the server's control API certificate for {}, valid until {}",
                ExportResources.controlServerName(export), issued.certificate().getNotAfter());
        Map<String, String> data = new LinkedHashMap<>();
        data.put(CA, trusted);
        data.put(CERTIFICATE, Pem.toSecretData(Pem.certificates(List.of(issued.certificate()))));
        data.put(KEY, Pem.toSecretData(Pem.privateKey(issued.key())));
        return data;
    }

    private static boolean stillGood(Map<String, String> data, String trusted, CertificateAuthority ca, String serverName) {
        if (data == null || !trusted.equals(data.get(CA)) || data.get(CERTIFICATE) == null || data.get(KEY) == null) {
            return false;
        }
        try {
            List<X509Certificate> chain = Pem.readCertificates(Pem.fromSecretData(data.get(CERTIFICATE)));
            X509Certificate certificate = chain.getFirst();
            return ControlCa.issuedBy(certificate, ca)
                    && !CertificateAuthority.renewalDue(certificate, Instant.now())
                    && certificate.getSubjectAlternativeNames() != null
                    && certificate.getSubjectAlternativeNames().contains(List.of(2, serverName));
        } catch (GeneralSecurityException | RuntimeException e) {
            return false; // not ours or damaged: issue a new one
        }
    }
}
