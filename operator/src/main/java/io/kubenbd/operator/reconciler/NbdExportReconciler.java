package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.Condition;
import io.fabric8.kubernetes.api.model.ConditionBuilder;
import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.api.model.PersistentVolume;
import io.fabric8.kubernetes.api.model.PersistentVolumeClaim;
import io.fabric8.kubernetes.api.model.Pod;
import io.fabric8.kubernetes.api.model.Secret;
import io.fabric8.kubernetes.api.model.Service;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;
import io.fabric8.kubernetes.api.model.networking.v1.NetworkPolicy;
import io.javaoperatorsdk.operator.api.config.informer.InformerConfiguration;
import io.javaoperatorsdk.operator.api.config.informer.InformerEventSourceConfiguration;
import io.javaoperatorsdk.operator.api.reconciler.Cleaner;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.api.reconciler.ControllerConfiguration;
import io.javaoperatorsdk.operator.api.reconciler.DeleteControl;
import io.javaoperatorsdk.operator.api.reconciler.EventSourceContext;
import io.javaoperatorsdk.operator.api.reconciler.EventSourceUtils;
import io.javaoperatorsdk.operator.api.reconciler.Reconciler;
import io.javaoperatorsdk.operator.api.reconciler.UpdateControl;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.KubernetesDependentResource;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.KubernetesDependentResourceConfigBuilder;
import io.javaoperatorsdk.operator.processing.event.ResourceID;
import io.javaoperatorsdk.operator.processing.event.source.EventSource;
import io.javaoperatorsdk.operator.processing.event.source.informer.InformerEventSource;
import io.kubenbd.operator.controltls.ControlCa;
import io.kubenbd.operator.model.DirtyBitmapStatus;
import io.kubenbd.operator.model.EndpointStatus;
import io.kubenbd.operator.model.ExportPhase;
import io.kubenbd.operator.model.NbdExport;
import io.kubenbd.operator.model.NbdExportStatus;
import io.kubenbd.operator.model.TlsMode;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.time.Duration;
import java.time.Instant;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.stream.Collectors;

/**
 * Reconciles one NbdExport, in named steps: {@link #checkInputs}, {@link #reconcileDependents},
 * {@link #observeServer}, {@link #syncBitmaps}, then status, Events and metrics. Dependents are
 * reconciled explicitly (JOSDK standalone dependents) so the order and the conditions under which
 * each runs are read here rather than spread over annotations.
 */
@ControllerConfiguration(name = NbdExportReconciler.NAME)
public final class NbdExportReconciler implements Reconciler<NbdExport>, Cleaner<NbdExport> {
    public static final String NAME = "nbdexport";
    private static final Logger LOG = LoggerFactory.getLogger(NbdExportReconciler.class);
    /** How soon an export that is not serving is looked at again, besides the events that wake it. */
    private static final Duration RECHECK = Duration.ofSeconds(30);
    private static final String MANAGED_SELECTOR = ExportResources.MANAGED_BY_LABEL + "=" + ExportResources.MANAGED_BY;

    private final ServerSettings settings;
    private final ExportMetrics metrics;
    private final PskSecretDependent pskSecret = new PskSecretDependent();
    private final ControlTlsSecretDependent controlTls;
    private final ServerStatefulSetDependent server;
    private final ServerServiceDependent service = new ServerServiceDependent();
    /** Null unless the operator fences the control port itself (see {@link ServerSettings#controlNetworkPolicy}). */
    private final ControlNetworkPolicyDependent controlPolicy;
    private final ConsumerVolumePolicy volumePolicy;
    private final ConsumerPersistentVolumeDependent persistentVolume;
    private final BitmapSync bitmapSync;
    /**
     * The last phase and Ready reason an Event was recorded for, per export: a reconcile may start
     * from a cached export whose status predates the previous reconcile's patch, and must not
     * repeat that Event.
     */
    private final Map<ResourceID, String> recordedTransitions = new java.util.concurrent.ConcurrentHashMap<>();

    public NbdExportReconciler(ServerSettings settings, ConsumerVolumePolicy volumePolicy, ExportMetrics metrics,
                               ControlCa controlCa) {
        this.settings = settings;
        this.volumePolicy = volumePolicy;
        this.metrics = metrics;
        this.server = new ServerStatefulSetDependent(settings);
        this.controlTls = new ControlTlsSecretDependent(controlCa);
        this.bitmapSync = new BitmapSync(controlCa);
        this.persistentVolume = new ConsumerPersistentVolumeDependent(volumePolicy);
        this.controlPolicy = settings.controlNetworkPolicy() == null ? null
                : new ControlNetworkPolicyDependent(settings.controlNetworkPolicy(), settings.controlPort());
        watchOnlyManaged(pskSecret, Secret.class);
        watchOnlyManaged(controlTls, Secret.class);
        watchOnlyManaged(server, StatefulSet.class);
        watchOnlyManaged(service, Service.class);
        watchOnlyManaged(persistentVolume, PersistentVolume.class);
        if (controlPolicy != null) {
            watchOnlyManaged(controlPolicy, NetworkPolicy.class);
        }
    }

    /** The operator's informers hold only what it made, not every Secret or Service in the cluster. */
    private static <R extends HasMetadata> void watchOnlyManaged(KubernetesDependentResource<R, NbdExport> dependent, Class<R> type) {
        dependent.configureWith(new KubernetesDependentResourceConfigBuilder<R>()
                .withKubernetesDependentInformerConfig(InformerConfiguration.builder(type)
                        .withLabelSelector(MANAGED_SELECTOR).build())
                .build());
    }

    @Override
    public List<EventSource<?, NbdExport>> prepareEventSources(EventSourceContext<NbdExport> context) {
        context.getPrimaryCache().addIndexer(ExportPreflight.PVC_INDEX, export -> List.of(ExportPreflight.pvcKey(
                export.getMetadata().getNamespace(), export.getSpec().source().persistentVolumeClaim())));
        var claims = new InformerEventSource<>(InformerEventSourceConfiguration.from(PersistentVolumeClaim.class, NbdExport.class)
                .withName("persistentvolumeclaims")
                .withSecondaryToPrimaryMapper(pvc -> exportsUsing(context,
                        ExportPreflight.pvcKey(pvc.getMetadata().getNamespace(), pvc.getMetadata().getName())))
                .withPrimaryToSecondaryMapper((NbdExport export) -> Set.of(new ResourceID(
                        export.getSpec().source().persistentVolumeClaim(), export.getMetadata().getNamespace())))
                .build(), context);
        // All pods, not only servers: a pod of someone else that mounts an exported PVC blocks a second writer.
        var pods = new InformerEventSource<>(InformerEventSourceConfiguration.from(Pod.class, NbdExport.class)
                .withName("pods")
                .withSecondaryToPrimaryMapper(pod -> podToExports(context, pod))
                .withPrimaryToSecondaryMapper((NbdExport export) -> Set.of(new ResourceID(
                        ExportResources.serverPodName(export), export.getMetadata().getNamespace())))
                .build(), context);
        pods.addIndexers(Map.of(ExportPreflight.PVC_INDEX, ExportPreflight::claimKeys));
        List<EventSource<?, NbdExport>> sources = new ArrayList<>(
                EventSourceUtils.dependentEventSources(context, pskSecret, controlTls, server, service, persistentVolume));
        if (controlPolicy != null) {
            sources.addAll(EventSourceUtils.dependentEventSources(context, controlPolicy));
        }
        sources.add(claims);
        sources.add(pods);
        return sources;
    }

    private static Set<ResourceID> exportsUsing(EventSourceContext<NbdExport> context, String claimKey) {
        return context.getPrimaryCache().byIndex(ExportPreflight.PVC_INDEX, claimKey).stream()
                .map(ResourceID::fromResource).collect(Collectors.toSet());
    }

    private static Set<ResourceID> podToExports(EventSourceContext<NbdExport> context, Pod pod) {
        var labels = pod.getMetadata().getLabels();
        if (labels != null && ExportResources.MANAGED_BY.equals(labels.get(ExportResources.MANAGED_BY_LABEL))
                && labels.get(ExportResources.EXPORT_LABEL) != null) {
            return Set.of(new ResourceID(labels.get(ExportResources.EXPORT_LABEL), pod.getMetadata().getNamespace()));
        }
        Set<ResourceID> exports = new HashSet<>();
        ExportPreflight.claimKeys(pod).forEach(key -> exports.addAll(exportsUsing(context, key)));
        return exports;
    }

    @Override
    public UpdateControl<NbdExport> reconcile(NbdExport export, Context<NbdExport> context) {
        NbdExportStatus previous = export.getStatus();
        List<Finding> findings = checkInputs(export, context);
        Finding blocker = findings.stream().filter(f -> f.blocks() != null).findFirst().orElse(null);
        if (blocker == null) {
            reconcileDependents(export, context);
        }
        ServerObservation observed = observeServer(context);
        if (observed.stuckRollout()) {
            replaceFailingPod(export, context, observed);
        }
        findings.add(observed.node() != null
                ? Finding.ok(ConditionTypes.SERVER_SCHEDULED, "Scheduled", "server pod runs on node " + observed.node())
                : new Finding(ConditionTypes.SERVER_SCHEDULED, false, observed.reason(), observed.message(), null));
        List<DirtyBitmapStatus> bitmaps = previous == null ? List.of() : previous.dirtyBitmaps();
        if (observed.ready()) {
            var synced = syncBitmaps(export, observed, bitmaps, context);
            findings.add(synced.finding());
            bitmaps = synced.bitmaps();
        } else if (!export.getSpec().dirtyBitmaps().isEmpty()) {
            findings.add(new Finding(ConditionTypes.BITMAPS_SYNCED, false, "ServerNotReady",
                    "dirty bitmaps are applied through the server's control API once the server is ready", null));
        }
        ExportPhase phase = phase(blocker, observed, previous, bitmaps);
        Finding ready = readiness(phase, blocker, observed, bitmaps);
        findings.add(ready);

        NbdExportStatus status = new NbdExportStatus(phase, conditions(export, previous, findings), observed.node(),
                endpoint(export), bitmaps,
                export.getSpec().persistentVolume() != null && export.getSpec().persistentVolume().createOrDefault()
                        && blocker == null ? ExportResources.persistentVolumeName(export) : null,
                export.getMetadata().getGeneration());
        recordTransition(export, context, previous, phase, ready);
        metrics.phase(ResourceID.fromResource(export), phase);

        UpdateControl<NbdExport> control;
        if (sameStatus(previous, status)) {
            control = UpdateControl.noUpdate();
        } else {
            export.setStatus(status);
            control = UpdateControl.patchStatus(export);
        }
        // A bitmap change the control API did not take (a server still reloading a renewed certificate) is tried again.
        boolean bitmapsPending = findings.stream().anyMatch(f -> f.type().equals(ConditionTypes.BITMAPS_SYNCED) && !f.ok());
        return phase == ExportPhase.Serving && !bitmapsPending ? control : control.rescheduleAfter(RECHECK);
    }

    /**
     * Step 1: the TLS Secret the spec names, the PVC (exists, fits, nobody else writes to it), the PersistentVolume
     * asked for (within the administrator's policy), and whether clients authenticate.
     */
    private List<Finding> checkInputs(NbdExport export, Context<NbdExport> context) {
        var podSource = context.eventSourceRetriever().getEventSourceFor(Pod.class, "pods");
        String key = ExportPreflight.pvcKey(export.getMetadata().getNamespace(), export.getSpec().source().persistentVolumeClaim());
        List<Pod> podsOnClaim = ((InformerEventSource<Pod, NbdExport>) podSource).byIndex(ExportPreflight.PVC_INDEX, key);
        List<Finding> findings = new ArrayList<>(List.of(ExportPreflight.secret(export, context),
                ExportPreflight.volume(export, context, podsOnClaim)));
        Finding persistentVolume = ExportPreflight.persistentVolume(export, volumePolicy);
        if (persistentVolume != null) {
            findings.add(persistentVolume);
        }
        findings.add(ExportPreflight.clientAuthentication(export));
        return findings;
    }

    /** Step 2: the objects the export owns, in the order the server needs them. */
    private void reconcileDependents(NbdExport export, Context<NbdExport> context) {
        if (export.getSpec().tlsOrDefault().generatedSecret()) {
            pskSecret.reconcile(export, context);
        }
        controlTls.reconcile(export, context);
        server.reconcile(export, context);
        service.reconcile(export, context);
        if (controlPolicy != null) {
            controlPolicy.reconcile(export, context);
        }
        var pv = export.getSpec().persistentVolume();
        if (pv != null && pv.createOrDefault()) {
            persistentVolume.reconcile(export, context);
        } else if (persistentVolume.getSecondaryResource(export, context).isPresent()) {
            persistentVolume.delete(export, context);
        }
    }

    /** Step 3: what the server pod reports. */
    private static ServerObservation observeServer(Context<NbdExport> context) {
        return ServerObservation.of(context.getSecondaryResource(StatefulSet.class).orElse(null),
                context.getSecondaryResource(Pod.class).orElse(null));
    }

    /** Step 3b: a failing pod of an old revision blocks the StatefulSet's rollout; it serves nobody, so delete it. */
    private static void replaceFailingPod(NbdExport export, Context<NbdExport> context, ServerObservation observed) {
        String pod = ExportResources.serverPodName(export);
        context.getClient().pods().inNamespace(export.getMetadata().getNamespace()).withName(pod).delete();
        ExportEvents.record(context.getClient(), export, ExportEvents.Type.Normal, "ReplacingFailedServer",
                "deleted failing server pod " + pod + " of an old revision so the StatefulSet can start the new one");
    }

    private record BitmapResult(List<DirtyBitmapStatus> bitmaps, Finding finding) {
    }

    /** Step 4: the server's dirty bitmaps, through its control API. */
    private BitmapResult syncBitmaps(NbdExport export, ServerObservation observed, List<DirtyBitmapStatus> previous,
                                     Context<NbdExport> context) {
        try {
            var outcome = bitmapSync.sync(export, observed.podIp(), settings.controlPort(), previous);
            if (!outcome.changes().isEmpty()) {
                ExportEvents.record(context.getClient(), export, ExportEvents.Type.Normal, "BitmapsChanged",
                        String.join("; ", outcome.changes()));
            }
            return new BitmapResult(outcome.bitmaps(), Finding.ok(ConditionTypes.BITMAPS_SYNCED, "Synced",
                    outcome.bitmaps().size() + " dirty bitmap(s) as in spec"));
        } catch (BitmapSync.ControlApiException e) {
            LOG.warn("bitmaps not synced: {}", e.getMessage());
            return new BitmapResult(previous, new Finding(ConditionTypes.BITMAPS_SYNCED, false, "ControlApiFailed",
                    e.getMessage(), null));
        }
    }

    private static ExportPhase phase(Finding blocker, ServerObservation observed, NbdExportStatus previous,
                                     List<DirtyBitmapStatus> bitmaps) {
        boolean wasServing = previous != null
                && (previous.phase() == ExportPhase.Serving || previous.phase() == ExportPhase.Degraded);
        if (blocker != null) {
            return blocker.blocks();
        }
        if (observed.ready()) {
            return inconsistentBitmap(bitmaps) == null ? ExportPhase.Serving : ExportPhase.Degraded;
        }
        if (observed.failing()) {
            return wasServing ? ExportPhase.Degraded : ExportPhase.Failed;
        }
        return wasServing ? ExportPhase.Degraded : ExportPhase.Pending;
    }

    private static DirtyBitmapStatus inconsistentBitmap(List<DirtyBitmapStatus> bitmaps) {
        return bitmaps.stream().filter(b -> "inconsistent".equals(b.state())).findFirst().orElse(null);
    }

    private static Finding readiness(ExportPhase phase, Finding blocker, ServerObservation observed,
                                     List<DirtyBitmapStatus> bitmaps) {
        if (blocker != null) {
            return new Finding(ConditionTypes.READY, false, blocker.reason(), blocker.message(), null);
        }
        if (phase == ExportPhase.Degraded && observed.ready()) {
            DirtyBitmapStatus lost = inconsistentBitmap(bitmaps);
            return new Finding(ConditionTypes.READY, false, "BitmapInconsistent", "dirty bitmap " + lost.name()
                    + " is inconsistent (" + lost.reason() + "); take a full backup, then set a new clearRequest on it", null);
        }
        return new Finding(ConditionTypes.READY, observed.ready(), observed.reason(), observed.message(), null);
    }

    private static EndpointStatus endpoint(NbdExport export) {
        var tls = export.getSpec().tlsOrDefault();
        String uri = (tls.modeOrDefault() == TlsMode.NONE ? "nbd" : "nbds") + "://" + ExportResources.serviceHost(export)
                + ":" + export.getSpec().serviceOrDefault().portOrDefault() + "/" + export.exportName();
        return new EndpointStatus(uri, ExportResources.tlsSecretName(export),
                tls.generatedSecret() ? PskSecretDependent.IDENTITY : null);
    }

    /** Conditions from findings; a condition keeps its transition time while its status stays the same. */
    private static List<Condition> conditions(NbdExport export, NbdExportStatus previous, List<Finding> findings) {
        String now = DateTimeFormatter.ISO_INSTANT.format(Instant.now().truncatedTo(java.time.temporal.ChronoUnit.SECONDS));
        List<Condition> conditions = new ArrayList<>();
        for (Finding finding : findings) {
            String status = finding.ok() ? "True" : "False";
            Condition before = previous == null ? null : previous.condition(finding.type());
            conditions.add(new ConditionBuilder()
                    .withType(finding.type()).withStatus(status).withReason(finding.reason())
                    .withMessage(finding.message()).withObservedGeneration(export.getMetadata().getGeneration())
                    .withLastTransitionTime(before != null && status.equals(before.getStatus()) ? before.getLastTransitionTime() : now)
                    .build());
        }
        return conditions;
    }

    private void recordTransition(NbdExport export, Context<NbdExport> context, NbdExportStatus previous,
                                  ExportPhase phase, Finding ready) {
        Condition before = previous == null ? null : previous.condition(ConditionTypes.READY);
        if (previous != null && phase == previous.phase() && before != null && Objects.equals(before.getReason(), ready.reason())) {
            return;
        }
        String transition = phase + "/" + ready.reason();
        if (transition.equals(recordedTransitions.put(ResourceID.fromResource(export), transition))) {
            return;
        }
        boolean warning = phase == ExportPhase.Failed || phase == ExportPhase.Degraded
                || (ready.reason() != null && ready.reason().startsWith("PersistentVolumeClaimNotFound"));
        ExportEvents.record(context.getClient(), export, warning ? ExportEvents.Type.Warning : ExportEvents.Type.Normal,
                ready.reason(), phase + ": " + ready.message());
    }

    /** Equal apart from transition times: nothing worth a write to the API server. */
    private static boolean sameStatus(NbdExportStatus a, NbdExportStatus b) {
        return a != null && withoutTransitionTimes(a).equals(withoutTransitionTimes(b));
    }

    private static NbdExportStatus withoutTransitionTimes(NbdExportStatus s) {
        return new NbdExportStatus(s.phase(),
                s.conditions().stream().map(c -> new ConditionBuilder(c).withLastTransitionTime(null).build()).toList(),
                s.node(), s.endpoint(), s.dirtyBitmaps(), s.persistentVolume(), s.observedGeneration());
    }

    @Override
    public DeleteControl cleanup(NbdExport export, Context<NbdExport> context) {
        if (persistentVolume.getSecondaryResource(export, context).isPresent()) {
            persistentVolume.delete(export, context);
        }
        metrics.removed(ResourceID.fromResource(export));
        recordedTransitions.remove(ResourceID.fromResource(export));
        LOG.info("export deleted; owned objects go with it (PersistentVolume deleted explicitly)");
        return DeleteControl.defaultDelete();
    }
}
