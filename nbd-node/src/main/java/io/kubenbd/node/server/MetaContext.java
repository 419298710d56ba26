package io.kubenbd.node.server;

/**
 * A meta context an export offers, with its id. Ids follow qemu-nbd: 0 base:allocation,
 * 1 qemu:allocation-depth, 2 and up the dirty bitmaps.
 */
record MetaContext(int id, MetaContextProvider provider) {
    static final int BASE_ALLOCATION = 0;
    static final int ALLOCATION_DEPTH = 1;
    static final int FIRST_BITMAP = 2;

    String name() {
        return provider.name();
    }
}
