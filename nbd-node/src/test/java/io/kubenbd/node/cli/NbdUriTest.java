package io.kubenbd.node.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@code nbd://HOST[:PORT][/EXPORT]} and {@code nbds://...?tls-psk-file=FILE} as qemu and libnbd write them. */
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
    @ValueSource(strings = {"nbd+unix:///disk?socket=/tmp/s", "nbds+unix:///disk", "http://host/disk", "host:10809"})
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

    @Test
    void plainNbdIsNeverTls() {
        NbdUri uri = NbdUri.parse("nbd://h:2000/disk");
        assertThat(uri.tls()).isFalse();
        assertThat(uri.tlsUsername()).isNull();
        assertThat(uri.tlsPskFile()).isNull();
    }

    @Test
    void nbdsWithIdentityAndPskFileAsLibnbdWritesIt() {
        assertThat(NbdUri.parse("nbds://alice@127.0.0.1:10810/disk?tls-psk-file=/etc/nbd/keys.psk"))
                .isEqualTo(new NbdUri("127.0.0.1", 10810, "disk", true, "alice", Path.of("/etc/nbd/keys.psk")));
        assertThat(NbdUri.parse("nbds://alice@127.0.0.1:10810?tls-psk-file=/k.psk"))
                .isEqualTo(new NbdUri("127.0.0.1", 10810, "", true, "alice", Path.of("/k.psk")));
    }

    @Test
    void nbdsWithoutQueryOrIdentity() {
        assertThat(NbdUri.parse("nbds://storage-1")).isEqualTo(new NbdUri("storage-1", 10809, "", true, null, null));
    }

    @Test
    void tlsUsernameParameterNamesTheIdentity() {
        assertThat(NbdUri.parse("nbds://h?tls-username=bob&tls-psk-file=k.psk").tlsUsername()).isEqualTo("bob");
        assertThat(NbdUri.parse("nbds://bob@h?tls-username=bob").tlsUsername()).isEqualTo("bob");
        assertThatThrownBy(() -> NbdUri.parse("nbds://alice@h?tls-username=bob"))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("two TLS identities");
    }

    @Test
    void queryValuesArePercentDecodedButPlusStaysPlus() {
        assertThat(NbdUri.parse("nbds://h?tls-psk-file=/my%20keys/a+b.psk").tlsPskFile())
                .isEqualTo(Path.of("/my keys/a+b.psk"));
        assertThat(NbdUri.parse("nbds://j%C3%BCrgen@h?tls-psk-file=k").tlsUsername()).isEqualTo("jürgen");
    }

    @ParameterizedTest
    @ValueSource(strings = {"nbds://h/disk?tls-certificates=/etc/pki", "nbds://h?socket=/tmp/s", "nbd://h?foo=bar",
            "nbds://h?tls-psk-file=k&tls-verify-peer=false"})
    void unknownQueryParametersAreAnError(String text) {
        assertThatThrownBy(() -> NbdUri.parse(text))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("unknown query parameter '")
                .hasMessageContaining("known: tls-psk-file, tls-username");
    }

    @ParameterizedTest
    @ValueSource(strings = {"nbd://alice@h/disk", "nbd://h/disk?tls-psk-file=k.psk", "nbd://h?tls-username=a"})
    void tlsSettingsOnPlainNbdAreAnError(String text) {
        assertThatThrownBy(() -> NbdUri.parse(text))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("needs nbds://");
    }

    @Test
    void emptyPskFileIsAnError() {
        assertThatThrownBy(() -> NbdUri.parse("nbds://h?tls-psk-file="))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("tls-psk-file needs a file name");
    }
}
