package io.kubenbd.node.tls;

import org.bouncycastle.jcajce.util.DefaultJcaJceHelper;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.tls.crypto.impl.jcajce.JcaTlsCrypto;

import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.NoSuchPaddingException;
import java.security.NoSuchAlgorithmException;
import java.security.Provider;
import java.security.SecureRandom;

/**
 * Bouncy Castle's JCA TLS crypto on the JDK's providers (AES-GCM on AES-NI), with Bouncy
 * Castle's own provider, unregistered, for the ciphers and MACs the JDK lacks under the names
 * BC asks for: its ChaCha20-Poly1305 wants "ChaCha7539" and "Poly1305", which the JDK does not
 * have, yet the default crypto offers those suites and then fails with internal_error.
 */
final class JdkFirstCrypto {
    private static final Provider BC = new BouncyCastleProvider();

    private JdkFirstCrypto() {}

    static JcaTlsCrypto create() {
        return new JcaTlsCrypto(new Helper(), new SecureRandom(), new SecureRandom()) { };
    }

    private static final class Helper extends DefaultJcaJceHelper {
        @Override
        public Cipher createCipher(String algorithm) throws NoSuchAlgorithmException, NoSuchPaddingException {
            try {
                return super.createCipher(algorithm);
            } catch (NoSuchAlgorithmException e) {
                return Cipher.getInstance(algorithm, BC);
            }
        }

        @Override
        public Mac createMac(String algorithm) throws NoSuchAlgorithmException {
            try {
                return super.createMac(algorithm);
            } catch (NoSuchAlgorithmException e) {
                return Mac.getInstance(algorithm, BC);
            }
        }
    }
}
