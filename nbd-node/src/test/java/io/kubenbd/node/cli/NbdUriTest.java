package io.kubenbd.node.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@code nbd://HOST[:PORT][/EXPORT]} as qemu and libnbd write it. */
class NbdUriTest {

    @Test
    void hostAloneUsesTheDefaultPortAndTheDefaultExport() {
        assertThat(NbdUri.parse("nbd://storage-1")).isEqualTo(new NbdUri("storage-1", 10809, ""));
        assertThat(NbdUri.parse("nbd://storage-1/")).isEqualTo(new NbdUri("storage-1", 10809, ""));
    }

    @Test
    void hostPortAndName() {
        assertThat(NbdUri.parse("nbd://10.0.0.5:10810/disk")).isEqualTo(new NbdUri("10.0.0.5", 10810, "disk"));
        assertThat(NbdUri.parse("nbd://[::1]:2000/vol-1")).isEqualTo(new NbdUri("[::1]", 2000, "vol-1"));
    }

    @Test
    void percentEncodedNamesAreDecoded() {
        assertThat(NbdUri.parse("nbd://h/my%20disk").exportName()).isEqualTo("my disk");
        assertThat(NbdUri.parse("nbd://h/a%2Fb").exportName()).isEqualTo("a/b");
        assertThat(NbdUri.parse("nbd://h/d%C3%AFsk").exportName()).isEqualTo("dïsk");
        assertThat(NbdUri.parse("nbd://h/dir/sub").exportName()).isEqualTo("dir/sub");
    }

    @Test
    void plusInANameIsAPlus() {
        // URI paths are not form data: '+' means '+' (qemu: nbd://h/a+b asks for export "a+b").
        assertThat(NbdUri.parse("nbd://h/a+b").exportName()).isEqualTo("a+b");
    }

    @ParameterizedTest
    @ValueSource(strings = {"nbd+unix:///disk?socket=/tmp/s", "http://host/disk", "nbds://host/disk", "host:10809"})
    void otherSchemesAreRejected(String uri) {
        assertThatThrownBy(() -> NbdUri.parse(uri))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("only nbd://HOST[:PORT][/EXPORT] is supported");
    }

    @Test
    void missingSchemeIsRejected() {
        assertThatThrownBy(() -> NbdUri.parse("/disk")).isInstanceOf(IllegalArgumentException.class);
    }

    @ParameterizedTest
    @ValueSource(strings = {"nbd:///disk", "nbd:disk", "nbd://:10809/disk"})
    void missingHostIsRejected(String uri) {
        assertThatThrownBy(() -> NbdUri.parse(uri))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("has no host");
    }

    @Test
    void notAUriAtAll() {
        assertThatThrownBy(() -> NbdUri.parse("nbd://host/bad%zz"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("is not a URI");
    }
}
