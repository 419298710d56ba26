package io.kubenbd.operator.reconciler;

import io.fabric8.kubernetes.api.model.IntOrString;
import io.fabric8.kubernetes.api.model.Service;
import io.fabric8.kubernetes.api.model.ServiceBuilder;
import io.javaoperatorsdk.operator.api.reconciler.Context;
import io.javaoperatorsdk.operator.processing.dependent.kubernetes.CRUDKubernetesDependentResource;
import io.kubenbd.operator.model.NbdExport;

/** The Service clients connect to; it carries NBD only (the control port stays pod-internal). */
public final class ServerServiceDependent extends CRUDKubernetesDependentResource<Service, NbdExport> {

    public ServerServiceDependent() {
        super(Service.class);
    }

    @Override
    protected Service desired(NbdExport export, Context<NbdExport> context) {
        var service = export.getSpec().serviceOrDefault();
        return new ServiceBuilder()
                .withMetadata(ExportResources.metadata(export, ExportResources.serviceName(export)))
                .withNewSpec()
                .withType(service.typeOrDefault().name())
                .withSelector(ExportResources.labels(export))
                .addNewPort().withName("nbd").withProtocol("TCP").withPort(service.portOrDefault())
                .withTargetPort(new IntOrString("nbd")).endPort()
                .endSpec()
                .build();
    }
}
