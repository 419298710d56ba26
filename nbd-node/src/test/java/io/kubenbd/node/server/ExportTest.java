package io.kubenbd.node.server;

import io.kubenbd.node.testing.ScratchDir;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** The meta contexts an export offers follow its configuration. */
class ExportTest {

    @Test
    void onlyTheConfiguredFixedContextsAreOfferedBesideTheBitmaps() throws Exception {
        try (ScratchDir dir = ScratchDir.create("export-contexts")) {
            check(dir.sparseFile("disk.img", 4096), dir.sparseFile("plain.img", 4096));
        }
    }

    private static void check(Path image, Path plain) throws Exception {
        var config = new ExportConfig("disk", image, false, "", 1,
                List.of(new ExportConfig.BitmapSpec("b1", 65536)), List.of(), ExportConfig.Format.RAW, List.of("base:allocation"));
        try (Export export = Export.open(config)) {
            assertThat(export.metaContexts()).extracting(MetaContext::name)
                    .containsExactly("base:allocation", "qemu:dirty-bitmap:b1");
            assertThat(export.metaContexts()).extracting(MetaContext::id).containsExactly(0, 2);
        }
        try (Export export = Export.open(new ExportConfig("all", plain, false, "", 1))) {
            assertThat(export.metaContexts()).extracting(MetaContext::name)
                    .containsExactly("base:allocation", "qemu:allocation-depth");
        }
    }
}
