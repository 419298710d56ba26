package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.EventBuilder;
import io.fabric8.kubernetes.client.KubernetesClient;
import io.fabric8.kubernetes.client.KubernetesClientException;
import io.kubenbd.operator.model.NbdExport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.time.Instant;
import java.time.format.DateTimeFormatter;

/**
 * Kubernetes Events on an export, for {@code kubectl describe}: one per state change (the
 * reconciler only calls this when the Ready reason changes), each also logged as one line.
 */
public final class ExportEvents {
    private static final Logger LOG = LoggerFactory.getLogger(ExportEvents.class);
    public static final String COMPONENT = "kube-nbd-operator";

    /** Normal or Warning, as Kubernetes spells them. */
    public enum Type { Normal, Warning }

    private ExportEvents() {}

    public static void record(KubernetesClient client, NbdExport export, Type type, String reason, String message) {
        String now = DateTimeFormatter.ISO_INSTANT.format(Instant.now());
        var event = new EventBuilder()
                .withNewMetadata().withGenerateName(export.getMetadata().getName() + ".")
                .withNamespace(export.getMetadata().getNamespace()).endMetadata()
                .withNewInvolvedObject()
                .withApiVersion(export.getApiVersion()).withKind(export.getKind())
                .withName(export.getMetadata().getName()).withNamespace(export.getMetadata().getNamespace())
                .withUid(export.getMetadata().getUid()).withResourceVersion(export.getMetadata().getResourceVersion())
                .endInvolvedObject()
                .withType(type.name()).withReason(reason).withMessage(message)
                .withFirstTimestamp(now).withLastTimestamp(now).withCount(1)
                .withNewSource().withComponent(COMPONENT).endSource()
                .withReportingComponent(COMPONENT)
                .build();
        if (type == Type.Warning) {
            LOG.warn("event {}: {}", reason, message);
        } else {
            LOG.info("event {}: {}", reason, message);
        }
        try {
            client.v1().events().inNamespace(export.getMetadata().getNamespace()).resource(event).create();
        } catch (KubernetesClientException e) {
            // An event is a courtesy; failing to write one must not fail the reconcile.
            LOG.warn("could not record event {}: {}", reason, e.getMessage());
        }
    }
}
