package io.kubenbd.node.protocol;

/** Error values of transmission replies. */
public enum NbdError {
    EPERM(1), EIO(5), ENOMEM(12), EINVAL(22), ENOSPC(28), EOVERFLOW(75), ENOTSUP(95), ESHUTDOWN(108);

    private final int code;

    NbdError(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    /** The error for a wire value; unknown values read as EINVAL, as the spec tells clients to. */
    public static NbdError fromCode(int code) {
        for (NbdError e : values()) {
            if (e.code == code) {
                return e;
            }
        }
        return EINVAL;
    }
}
