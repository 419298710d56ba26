package io.kubenbd.operator.reconciler;

import java.util.Map;

/**
 * Who may reach the servers' control port, for the NetworkPolicy the operator makes per export
 * when the chart makes none (see {@link ControlNetworkPolicyDependent}).
 *
 * @param operatorNamespace the namespace the operator's pods run in
 * @param operatorLabels    labels that select the operator's pods there
 */
public record ControlNetworkPolicy(String operatorNamespace, Map<String, String> operatorLabels) {
    public ControlNetworkPolicy {
        operatorLabels = Map.copyOf(operatorLabels);
        if (operatorLabels.isEmpty()) {
            throw new IllegalArgumentException("the control port's NetworkPolicy needs labels that select the operator's pods");
        }
    }
}
