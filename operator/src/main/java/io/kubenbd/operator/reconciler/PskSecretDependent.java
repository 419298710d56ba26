package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.Secret;
import io.fabric8.kubernetes.api.model.SecretBuilder;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.api.reconciler.dependent.GarbageCollected;
import io.javaoperatorsdk.operator.processing.dependent.Creator;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.KubernetesDependentResource;
import io.kubenbd.operator.model.NbdExport;

import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.HexFormat;
import java.util.Map;

/**
 * The generated PSK Secret: {@code keys.psk} holds one {@code identity:hexkey} line with a
 * random 256-bit key, the format psktool writes and qemu, libnbd and nbd-node read. It is only
 * created, never updated, so the key stays stable; deleted by hand, it comes back with a new
 * key, which the server picks up from its mounted Secret without a restart.
 */
public final class PskSecretDependent extends KubernetesDependentResource<Secret, NbdExport>
        implements Creator<Secret, NbdExport>, GarbageCollected<NbdExport> {
    public static final String IDENTITY = "kube-nbd";
    private static final SecureRandom RANDOM = new SecureRandom();

    public PskSecretDependent() {
        super(Secret.class);
    }

    @Override
    protected Secret desired(NbdExport export, Context<NbdExport> context) {
        byte[] key = new byte[32];
        RANDOM.nextBytes(key);
        String line = IDENTITY + ":" + HexFormat.of().formatHex(key) + "\n";
        return new SecretBuilder()
                .withMetadata(ExportResources.metadata(export, ExportResources.generatedSecretName(export)))
                .withType("Opaque")
                .withData(Map.of(ExportResources.PSK_KEY,
                        Base64.getEncoder().encodeToString(line.getBytes(StandardCharsets.US_ASCII))))
                .build();
    }
}
