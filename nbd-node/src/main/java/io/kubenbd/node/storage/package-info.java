/**
 * The bytes behind an export: a sparse-file backend and a block-device backend, both driven
 * through Linux system calls made with the FFM API (pread/pwrite, fallocate, lseek
 * SEEK_DATA/SEEK_HOLE, BLKGETSIZE64/BLKDISCARD/BLKZEROOUT ioctls), answering what they can
 * do so that the server derives its export flags from those answers. Failed calls surface as
 * {@link io.kubenbd.node.storage.ErrnoException} with the kernel's exact errno, which the
 * server maps onto NBD errors.
 */
package io.kubenbd.node.storage;
