package io.kubenbd.operator.model;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The CRD in {@code crds/} is what users and the Helm chart install; it must be exactly what
 * crd-generator makes from the model classes in this build (target/crds), or the schema users get
 * and the Java model would drift apart.
 */
class CommittedCrdTest {
    private static final String FILE = "nbdexports.kubenbd.io-v1.yml";

    @Test
    void committedCrdIsTheGeneratedOne() throws IOException {
        Path generated = Path.of("target", "crds", FILE);
        Path committed = Path.of("..", "crds", FILE);
        assertThat(generated).as("crd-generator output (process-classes phase)").exists();
        assertThat(Files.readString(committed))
                .as("crds/%s differs from the model; regenerate it with: mvn -pl operator process-classes && cp operator/target/crds/%s crds/",
                        FILE, FILE)
                .isEqualTo(Files.readString(generated));
    }
}
