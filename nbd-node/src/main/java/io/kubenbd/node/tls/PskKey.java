package io.kubenbd.node.tls;

import java.util.Arrays;

/** One pre-shared key. {@link #toString()} names the identity only, so the key can never reach a log. */
public final class PskKey {
    private final String identity;
    private final byte[] key;

    public PskKey(String identity, byte[] key) {
        if (identity.isEmpty()) {
            throw new IllegalArgumentException("PSK identity must not be empty");
        }
        if (key.length == 0) {
            throw new IllegalArgumentException("PSK for '" + identity + "' is empty");
        }
        this.identity = identity;
        this.key = key.clone();
    }

    public String identity() {
        return identity;
    }

    /** A copy of the key bytes; callers wipe it when done. */
    public byte[] key() {
        return key.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof PskKey other && identity.equals(other.identity) && Arrays.equals(key, other.key);
    }

    @Override
    public int hashCode() {
        return identity.hashCode();
    }

    @Override
    public String toString() {
        return "PskKey[" + identity + "]";
    }
}
