package io.kubenbd.operator.model;

import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Max;
import io.fabric8.generator.annotation.Min;

/** The Service in front of the server pod. */
public record ServiceSpec(
        @Default("ClusterIP") ServiceType type,
        @Default("10809") @Min(1) @Max(65535) Integer port) {

    public ServiceType typeOrDefault() {
        return type == null ? ServiceType.ClusterIP : type;
    }

    public int portOrDefault() {
        return port == null ? 10809 : port;
    }

    /** Kubernetes Service types an export can use. */
    public enum ServiceType { ClusterIP, NodePort, LoadBalancer }
}
