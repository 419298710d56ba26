package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.ContainerStatus;
import io.fabric8.kubernetes.api.model.Pod;
import io.fabric8.kubernetes.api.model.PodCondition;
import io.fabric8.kubernetes.api.model.apps.StatefulSet;

import java.util.Objects;

/**
 * What the server pod and its StatefulSet say about the server, reduced to what status needs:
 * where it runs, whether it is ready, and if not, why, in words taken from Kubernetes (the
 * scheduler's message, the container's termination message, a rollout in progress).
 */
record ServerObservation(String node, String podIp, boolean ready, boolean failing, boolean stuckRollout,
                         String reason, String message) {
    private static final int MAX_MESSAGE = 400;

    static ServerObservation of(StatefulSet statefulSet, Pod pod) {
        // Only once the StatefulSet controller has seen a first version can a newer one be a restart.
        var sts = statefulSet == null ? null : statefulSet.getStatus();
        boolean rollingOut = sts != null && sts.getObservedGeneration() != null
                && (sts.getObservedGeneration() < statefulSet.getMetadata().getGeneration()
                || (sts.getCurrentRevision() != null && !sts.getCurrentRevision().equals(sts.getUpdateRevision())));
        if (pod == null || pod.getMetadata().getDeletionTimestamp() != null) {
            return new ServerObservation(null, null, false, false, false, rollingOut ? "ServerRestarting" : "ServerPodPending",
                    rollingOut ? "a spec change needs a server restart; the server pod is being replaced"
                            : "waiting for the StatefulSet to create the server pod");
        }
        String node = pod.getSpec().getNodeName();
        if (node == null || node.isEmpty()) {
            String why = podCondition(pod, "PodScheduled");
            return new ServerObservation(null, null, false, false, false, "ServerUnscheduled",
                    why == null ? "waiting for the scheduler to place the server pod" : "server pod not scheduled: " + why);
        }
        String podIp = pod.getStatus() == null ? null : pod.getStatus().getPodIP();
        ContainerStatus container = pod.getStatus() == null || pod.getStatus().getContainerStatuses() == null ? null
                : pod.getStatus().getContainerStatuses().stream()
                .filter(c -> ServerPodTemplate.CONTAINER.equals(c.getName())).findFirst().orElse(null);
        if (container != null && Boolean.TRUE.equals(container.getReady()) && podIp != null) {
            return new ServerObservation(node, podIp, true, false, false, "Serving", "server ready on node " + node);
        }
        String failure = failure(container);
        var labels = pod.getMetadata().getLabels();
        boolean outdated = rollingOut && labels != null
                && !Objects.equals(labels.get("controller-revision-hash"), sts.getUpdateRevision());
        if (failure != null && outdated) {
            // The StatefulSet controller never replaces a pod that is not ready (kubernetes#67250); the operator does.
            return new ServerObservation(node, podIp, false, true, true, "ServerRestarting",
                    "a spec change needs a server restart; the failing server pod (" + failure + ") is being replaced");
        }
        if (failure != null) {
            return new ServerObservation(node, podIp, false, true, false, "ServerFailing", failure);
        }
        if (rollingOut) {
            return new ServerObservation(node, podIp, false, false, false, "ServerRestarting",
                    "a spec change needs a server restart; the server pod is being replaced");
        }
        return new ServerObservation(node, podIp, false, false, false, "ServerStarting", "server starting on node " + node);
    }

    /** The reason the server container stopped or cannot start, or null while nothing went wrong. */
    private static String failure(ContainerStatus container) {
        if (container == null) {
            return null;
        }
        var state = container.getState();
        var last = container.getLastState();
        var terminated = state != null && state.getTerminated() != null ? state.getTerminated()
                : last != null ? last.getTerminated() : null;
        if (terminated != null && terminated.getExitCode() != null && terminated.getExitCode() != 0) {
            String text = terminated.getMessage() == null || terminated.getMessage().isBlank()
                    ? terminated.getReason() : lastLine(terminated.getMessage());
            return "server exited with code " + terminated.getExitCode() + ": " + text
                    + " (restarts: " + container.getRestartCount() + ")";
        }
        if (state != null && state.getWaiting() != null && state.getWaiting().getReason() != null
                && !"ContainerCreating".equals(state.getWaiting().getReason())) {
            var waiting = state.getWaiting();
            return "server container waiting: " + waiting.getReason()
                    + (waiting.getMessage() == null ? "" : " (" + lastLine(waiting.getMessage()) + ")");
        }
        return null;
    }

    private static String podCondition(Pod pod, String type) {
        if (pod.getStatus() == null || pod.getStatus().getConditions() == null) {
            return null;
        }
        return pod.getStatus().getConditions().stream().filter(c -> type.equals(c.getType()))
                .filter(c -> "False".equals(c.getStatus())).map(PodCondition::getMessage).filter(Objects::nonNull)
                .findFirst().orElse(null);
    }

    /** The last non-blank line (the server's error), cut to a length fit for a condition message. */
    private static String lastLine(String text) {
        String line = text.lines().filter(l -> !l.isBlank()).reduce((a, b) -> b).orElse("").strip();
        return line.length() <= MAX_MESSAGE ? line : line.substring(0, MAX_MESSAGE) + "...";
    }
}
