package io.kubenbd.operator.model;

import io.fabric8.generator.annotation.Pattern;
import io.fabric8.generator.annotation.Required;
import io.fabric8.generator.annotation.Size;
import io.fabric8.generator.annotation.ValidationRule;

/**
 * The volume behind the export: a PVC in the export's namespace. A Block PVC is exported as it
 * is; a Filesystem PVC needs {@code imagePath}, a file on it (raw, or a kube-nbd overlay).
 */
// On the type: a rule on a record component would be emitted twice (field and accessor).
@ValidationRule(value = "!has(self.imagePath) || !self.imagePath.split('/').exists(p, p == '..' || p == '.')",
        message = "source.imagePath must be a relative path inside the volume, without '.' or '..' parts")
// The server never parses the path (it reaches it as one YAML value), but a comma or a control character in a
// file name is far more likely an attempt to add options or forge log lines than a real image.
@ValidationRule(value = "!has(self.imagePath) || !self.imagePath.matches(r'[,\\p{Cc}]')",
        message = "source.imagePath must not contain commas or control characters (newline, tab, ...): rename the image file")
public record ExportSource(
        @Required @Size(min = 1, max = 253) @Pattern("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$") String persistentVolumeClaim,
        @Size(max = 1024) @Pattern("^[^/]([^/]*/)*[^/]+$") String imagePath) {
}
