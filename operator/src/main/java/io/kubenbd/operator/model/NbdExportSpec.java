package io.kubenbd.operator.model;

import io.fabric8.generator.annotation.Default;
import io.fabric8.generator.annotation.Max;
import io.fabric8.generator.annotation.Min;
import io.fabric8.generator.annotation.Pattern;
import io.fabric8.generator.annotation.Required;
import io.fabric8.generator.annotation.Size;
import io.fabric8.generator.annotation.ValidationRule;

import java.util.List;

/**
 * What to export and how. Only {@code source} is required; every other field has a default
 * that the API server fills in. {@code metaContexts} left out offers both fixed contexts; the
 * dirty bitmaps are offered as {@code qemu:dirty-bitmap:NAME} whatever it says.
 */
@ValidationRule(value = "self.source == oldSelf.source",
        message = "spec.source is immutable: create a new NbdExport to export another volume or image")
// On the type: a rule on a record component would be emitted twice (field and accessor).
@ValidationRule(value = "!has(self.dirtyBitmaps) || self.dirtyBitmaps.all(b, self.dirtyBitmaps.exists_one(c, c.name == b.name))",
        message = "spec.dirtyBitmaps: each name may appear only once")
@ValidationRule(value = "!has(self.tls) || self.tls.mode != 'none' || !has(self.service) || !has(self.service.type) "
        + "|| self.service.type == 'ClusterIP'",
        message = "tls.mode none is allowed only with service.type ClusterIP: plain NBD on a NodePort or LoadBalancer "
                + "lets anyone who reaches a node or the load balancer read and write the volume; use tls.mode psk or x509")
public record NbdExportSpec(
        @Required ExportSource source,
        @Pattern("^[A-Za-z0-9][A-Za-z0-9._:@+-]*$") @Size(max = 256) String exportName,
        @Default("false") Boolean readOnly,
        TlsSpec tls,
        @Default("8") @Min(1) @Max(64) Integer maxConnections,
        @Size(min = 1, max = 2) List<MetaContextName> metaContexts,
        @Size(max = 32) List<DirtyBitmapSpec> dirtyBitmaps,
        ServiceSpec service,
        PersistentVolumeSpec persistentVolume) {

    public NbdExportSpec {
        dirtyBitmaps = dirtyBitmaps == null ? List.of() : List.copyOf(dirtyBitmaps);
        metaContexts = metaContexts == null ? null : List.copyOf(metaContexts);
    }

    /** {@link #tls()} with the defaults applied, for code that runs before the API server defaulted it. */
    public TlsSpec tlsOrDefault() {
        return tls == null ? new TlsSpec(TlsMode.PSK, null) : tls;
    }

    public ServiceSpec serviceOrDefault() {
        return service == null ? new ServiceSpec(null, null) : service;
    }

    public boolean readOnlyOrDefault() {
        return Boolean.TRUE.equals(readOnly);
    }

    public int maxConnectionsOrDefault() {
        return maxConnections == null ? 8 : maxConnections;
    }
}
