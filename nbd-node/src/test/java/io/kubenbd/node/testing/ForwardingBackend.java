package io.kubenbd.node.testing;

import io.kubenbd.node.storage.Extent;
import io.kubenbd.node.storage.StorageBackend;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;

/** A backend that passes every call to another; tests override the calls they watch or slow down. */
public abstract class ForwardingBackend implements StorageBackend {
    protected final StorageBackend file;

    protected ForwardingBackend(StorageBackend file) {
        this.file = file;
    }

    @Override public long size() { return file.size(); }
    @Override public boolean readOnly() { return file.readOnly(); }
    @Override public boolean rotational() { return file.rotational(); }
    @Override public int minimumBlockSize() { return file.minimumBlockSize(); }
    @Override public int preferredBlockSize() { return file.preferredBlockSize(); }
    @Override public boolean supportsTrim() { return file.supportsTrim(); }
    @Override public void read(long offset, ByteBuffer dst) throws IOException { file.read(offset, dst); }
    @Override public void write(long offset, ByteBuffer src) throws IOException { file.write(offset, src); }
    @Override public void flush() throws IOException { file.flush(); }
    @Override public void trim(long offset, long length) throws IOException { file.trim(offset, length); }
    @Override public void cache(long offset, long length) throws IOException { file.cache(offset, length); }
    @Override public void close() throws IOException { file.close(); }

    @Override
    public boolean writeZeroes(long offset, long length, boolean mayPunchHole, boolean fastOnly) throws IOException {
        return file.writeZeroes(offset, length, mayPunchHole, fastOnly);
    }

    @Override
    public List<Extent> allocation(long offset, long length, int maxExtents) throws IOException {
        return file.allocation(offset, length, maxExtents);
    }
}
