package io.kubenbd.node.protocol;

/** Information items of NBD_OPT_INFO and NBD_OPT_GO. */
public final class InfoType {
    public static final int EXPORT = 0;
    public static final int NAME = 1;
    public static final int DESCRIPTION = 2;
    public static final int BLOCK_SIZE = 3;

    private InfoType() {}
}
