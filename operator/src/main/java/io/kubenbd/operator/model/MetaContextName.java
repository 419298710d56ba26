package io.kubenbd.operator.model;

import com.fasterxml.jackson.annotation.JsonProperty;

/** The block-status meta contexts an export can offer besides its dirty bitmaps. */
public enum MetaContextName {
    /** Which ranges hold data, zeroes or holes. */
    @JsonProperty("base:allocation") BASE_ALLOCATION("base:allocation"),
    /** Which layer of a backing chain holds each range. */
    @JsonProperty("qemu:allocation-depth") ALLOCATION_DEPTH("qemu:allocation-depth");

    private final String wireName;

    MetaContextName(String wireName) {
        this.wireName = wireName;
    }

    /** The name NBD clients negotiate. */
    public String wireName() {
        return wireName;
    }
}
