package io.kubenbd.node.tls;

import org.bouncycastle.tls.CipherSuite;

import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.HashMap;
import java.util.Map;

/** Names of Bouncy Castle's cipher suite numbers, for log lines and the benchmark table. */
final class CipherSuiteNames {
    private static final Map<Integer, String> NAMES = new HashMap<>();

    static {
        for (Field f : CipherSuite.class.getFields()) {
            if (Modifier.isStatic(f.getModifiers()) && f.getType() == int.class && f.getName().startsWith("TLS_")) {
                try {
                    NAMES.putIfAbsent(f.getInt(null), f.getName());
                } catch (IllegalAccessException e) {
                    throw new IllegalStateException(e);
                }
            }
        }
    }

    private CipherSuiteNames() {}

    static String name(int suite) {
        return NAMES.getOrDefault(suite, "0x" + Integer.toHexString(suite));
    }
}
