package io.kubenbd.node.storage;

/**
 * The parts of statx(2) the storage layer needs.
 *
 * @param mode           st_mode: file type and permission bits
 * @param size           bytes in a regular file (0 for a block device; ask BLKGETSIZE64)
 * @param allocatedBytes bytes of storage the file occupies; less than size where it has holes
 * @param deviceMajor    major number of the device a device file stands for
 * @param deviceMinor    minor number of the device a device file stands for
 */
record FileStatus(int mode, long size, long allocatedBytes, int deviceMajor, int deviceMinor) {
    /** st_blocks counts 512-byte units whatever the file system's block size. */
    static final long BLOCK_UNIT = 512;

    private static final int S_IFMT = 0xF000;
    private static final int S_IFREG = 0x8000;
    private static final int S_IFBLK = 0x6000;

    enum Kind { REGULAR_FILE, BLOCK_DEVICE, OTHER }

    Kind kind() {
        return switch (mode & S_IFMT) {
            case S_IFREG -> Kind.REGULAR_FILE;
            case S_IFBLK -> Kind.BLOCK_DEVICE;
            default -> Kind.OTHER;
        };
    }
}
