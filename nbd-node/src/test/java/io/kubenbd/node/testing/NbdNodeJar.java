package io.kubenbd.node.testing;

import java.nio.file.Files;
import java.nio.file.Path;

/** The packaged {@code nbd-node.jar} and the Java that runs the tests, for starting it as a process. */
public final class NbdNodeJar {
    private NbdNodeJar() {}

    /** The {@code java} of the JDK running the tests (22+, as the jar needs). */
    public static String java() {
        return Path.of(System.getProperty("java.home"), "bin", "java").toString();
    }

    /** The runnable jar; integration tests run after {@code mvn package} has built it. */
    public static String jar() {
        Path jar = Path.of("target", "nbd-node.jar").toAbsolutePath();
        if (!Files.isRegularFile(jar)) {
            throw new AssertionError(jar + " is missing: integration tests run after 'mvn package'");
        }
        return jar.toString();
    }
}
