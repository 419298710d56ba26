package io.kubenbd.node.server;

import io.kubenbd.node.protocol.BlockDescriptor;
import io.kubenbd.node.storage.DepthRun;
import io.kubenbd.node.storage.LayeredBackend;
import io.kubenbd.node.storage.StorageBackend;

import java.io.IOException;
import java.util.List;

/**
 * {@code qemu:allocation-depth}: which layer of a backing chain holds each block, 0 for none,
 * 1 for the top. A plain file or device is one layer holding every byte, as qemu reports a
 * raw image.
 */
final class AllocationDepthContext implements MetaContextProvider {
    static final String NAME = "qemu:allocation-depth";

    private final StorageBackend backend;

    AllocationDepthContext(StorageBackend backend) {
        this.backend = backend;
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public List<BlockDescriptor> describe(long offset, long length, int maxDescriptors) throws IOException {
        if (!(backend instanceof LayeredBackend layered)) {
            return List.of(new BlockDescriptor(length, 1));
        }
        return layered.depth(offset, length, maxDescriptors).stream()
                .map((DepthRun run) -> new BlockDescriptor(run.length(), run.depth()))
                .toList();
    }
}
