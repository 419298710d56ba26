package io.kubenbd.node.cli;

import io.kubenbd.node.storage.OverlayImage;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;

@Command(name = "image", mixinStandardHelpOptions = true, usageHelpAutoWidth = true,
        description = "Manage kube-nbd's copy-on-write image files.",
        subcommands = {ImageCommand.Create.class})
final class ImageCommand {

    @Command(name = "create", mixinStandardHelpOptions = true, usageHelpAutoWidth = true,
            description = {"Create an empty copy-on-write top layer (64 KiB clusters). Serve it over read-only "
                    + "backing images with --export NAME=PATH,backing=BASE[,backing=...]; blocks it does not hold "
                    + "read from the first backing layer that does."})
    static final class Create implements Callable<Integer> {
        @Option(names = "--size", required = true, paramLabel = "SIZE",
                description = "Virtual size: bytes, or with K, M, G or T; usually the size of the backing image.")
        String size;

        @Parameters(paramLabel = "PATH", description = "The new image file; must not exist.")
        Path path;

        @Override
        public Integer call() throws IOException {
            long bytes = ByteSize.parse(size, "--size");
            if (bytes <= 0) {
                throw new IllegalArgumentException("--size must be positive");
            }
            if (Files.exists(path)) {
                throw new IOException(path + " already exists; not overwriting it");
            }
            OverlayImage.create(path, bytes);
            System.out.println("created " + path + ": " + bytes + " bytes, copy-on-write top layer");
            return 0;
        }
    }
}
