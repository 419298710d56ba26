package io.kubenbd.node.server;

/** A meta context a client selected, with the id the server assigned it. */
record SelectedContext(int id, MetaContextProvider provider) {}
