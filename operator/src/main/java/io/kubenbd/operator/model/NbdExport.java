package io.kubenbd.operator.model;

import io.fabric8.crd.generator.annotation.AdditionalPrinterColumn;
import io.fabric8.kubernetes.api.model.Namespaced;
import io.fabric8.kubernetes.client.CustomResource;
import io.fabric8.kubernetes.model.annotation.Group;
import io.fabric8.kubernetes.model.annotation.Kind;
import io.fabric8.kubernetes.model.annotation.Plural;
import io.fabric8.kubernetes.model.annotation.ShortNames;
import io.fabric8.kubernetes.model.annotation.Singular;
import io.fabric8.kubernetes.model.annotation.Version;

/** A volume exported over NBD: which PVC, how clients reach it, and what the server offers. */
@Group(NbdExport.GROUP)
@Version(NbdExport.VERSION)
@Kind("NbdExport")
@Singular("nbdexport")
@Plural("nbdexports")
@ShortNames("nbdx")
@AdditionalPrinterColumn(name = "Phase", jsonPath = ".status.phase", type = AdditionalPrinterColumn.Type.STRING)
@AdditionalPrinterColumn(name = "Endpoint", jsonPath = ".status.endpoint.uri", type = AdditionalPrinterColumn.Type.STRING)
@AdditionalPrinterColumn(name = "Node", jsonPath = ".status.node", type = AdditionalPrinterColumn.Type.STRING)
@AdditionalPrinterColumn(name = "Age", jsonPath = ".metadata.creationTimestamp", type = AdditionalPrinterColumn.Type.DATE)
public class NbdExport extends CustomResource<NbdExportSpec, NbdExportStatus> implements Namespaced {
    public static final String GROUP = "kubenbd.io";
    public static final String VERSION = "v1alpha1";

    /** The name NBD clients ask for: {@code spec.exportName}, or the resource's name when that is empty. */
    public String exportName() {
        String name = getSpec().exportName();
        return name == null || name.isEmpty() ? getMetadata().getName() : name;
    }
}
