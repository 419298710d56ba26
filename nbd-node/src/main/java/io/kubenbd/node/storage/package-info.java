/**
 * The bytes behind an export: a sparse-file backend and a block-device backend, both driven
 * through Linux system calls made with the FFM API (pread/pwrite, fallocate, lseek
 * SEEK_DATA/SEEK_HOLE, BLKGETSIZE64/BLKDISCARD/BLKZEROOUT ioctls), answering what they can
 * do so that the server derives its export flags from those answers. Failed calls surface as
 * {@link io.kubenbd.node.storage.ErrnoException} with the kernel's exact errno, which the
 * server maps onto NBD errors.
 *
 * <p>{@link io.kubenbd.node.storage.DirtyBitmapSet} keeps an export's named dirty bitmaps
 * (which granules were written since a backup), persisted next to the data in
 * {@code <data path>.bitmaps/} and served as {@code qemu:dirty-bitmap:NAME} block status.
 */
package io.kubenbd.node.storage;
