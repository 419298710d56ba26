package io.kubenbd.operator.controltls;

import java.security.PrivateKey;
import java.security.cert.X509Certificate;

/** A certificate the control CA issued and its key; {@link #toString()} names the subject only. */
public record IssuedCertificate(X509Certificate certificate, PrivateKey key) {
    @Override
    public String toString() {
        return "IssuedCertificate[" + certificate.getSubjectX500Principal().getName() + ", until " + certificate.getNotAfter() + "]";
    }
}
