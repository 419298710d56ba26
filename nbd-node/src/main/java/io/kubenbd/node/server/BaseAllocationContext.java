package io.kubenbd.node.server;

import io.kubenbd.node.protocol.BlockDescriptor;
import io.kubenbd.node.storage.Extent;
import io.kubenbd.node.storage.StorageBackend;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/** {@code base:allocation}: holes and known-zero runs as the backend reports them. */
final class BaseAllocationContext implements MetaContextProvider {
    static final String NAME = "base:allocation";
    static final int STATE_HOLE = 1;
    static final int STATE_ZERO = 2;

    private final StorageBackend backend;

    BaseAllocationContext(StorageBackend backend) {
        this.backend = backend;
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public List<BlockDescriptor> describe(long offset, long length, int maxDescriptors) throws IOException {
        List<BlockDescriptor> out = new ArrayList<>();
        long position = offset;
        long end = offset + length;
        while (position < end && out.size() < maxDescriptors) {
            List<Extent> extents = backend.allocation(position, end - position, maxDescriptors - out.size());
            for (Extent e : extents) {
                long status = (e.hole() ? STATE_HOLE : 0) | (e.zero() ? STATE_ZERO : 0);
                long len = Math.min(e.length(), end - position);
                int last = out.size() - 1;
                if (last >= 0 && out.get(last).status() == status) {
                    // Filesystems may split one state into several extents; clients want runs.
                    out.set(last, new BlockDescriptor(out.get(last).length() + len, status));
                } else {
                    out.add(new BlockDescriptor(len, status));
                }
                position += len;
                if (position >= end) {
                    break;
                }
            }
        }
        return out;
    }
}
