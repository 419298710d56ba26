package io.kubenbd.node.tls;

import org.bouncycastle.tls.CipherSuite;
import org.bouncycastle.tls.ProtocolVersion;

import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.HashMap;
import java.util.Map;

/** IANA names of Bouncy Castle's cipher suite numbers (it has no lookup of its own). */
final class TlsNames {
    private static final Map<Integer, String> SUITES = new HashMap<>();

    static {
        for (Field field : CipherSuite.class.getFields()) {
            if (field.getType() == int.class && Modifier.isStatic(field.getModifiers())) {
                try {
                    SUITES.putIfAbsent(field.getInt(null), field.getName());
                } catch (IllegalAccessException e) {
                    throw new AssertionError(e);
                }
            }
        }
    }

    private TlsNames() {}

    /** The JDK's spelling ({@code TLSv1.3}), so logs read the same for PSK and X.509 sessions. */
    static String protocol(ProtocolVersion version) {
        return version.isTLS() && version.getMajorVersion() == 3 && version.getMinorVersion() >= 1
                ? "TLSv1." + (version.getMinorVersion() - 1) : version.getName();
    }

    static String cipherSuite(int suite) {
        return SUITES.getOrDefault(suite, String.format("0x%04X", suite));
    }
}
