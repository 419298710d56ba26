package io.kubenbd.node.storage;

/**
 * A snapshot of one dirty bitmap's description.
 *
 * @param name        the bitmap's name, as used in {@code qemu:dirty-bitmap:NAME}
 * @param granularity bytes tracked by one bit (a power of two, 512 B .. 64 MiB)
 * @param state       recording, frozen or inconsistent
 * @param dirtyBytes  bytes inside dirty granules, clipped at the export end (0 when inconsistent)
 * @param reason      why the bitmap is {@link DirtyBitmapState#INCONSISTENT} and how to recover;
 *                    empty for any other state
 */
public record DirtyBitmapInfo(String name, long granularity, DirtyBitmapState state, long dirtyBytes, String reason) {}
