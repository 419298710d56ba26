package io.kubenbd.node.server;

import static io.kubenbd.node.testing.NbdNodeJar.jar;
import static io.kubenbd.node.testing.NbdNodeJar.java;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.kubenbd.node.testing.PeerCommand;
import io.kubenbd.node.testing.ScratchDir;
import io.kubenbd.node.testing.ServerProcess;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * nbd-node against the real peers it must serve: qemu 10 (extended headers, block-status
 * payload), libnbd 1.14 (structured replies), fio. Where a peer can talk to qemu-nbd as
 * well, the same question is asked of both servers and the answers must be the same.
 */
class InteropIT {
    private static final Duration LIMIT = Duration.ofSeconds(60);
    private static final int KIB = 1024;
    private static final int MIB = 1024 * KIB;
    private static final String PYTHON = "/usr/bin/python3";

    private ScratchDir scratch;

    @BeforeEach
    void createScratch() throws IOException {
        scratch = ScratchDir.create("kube-nbd-interop-");
    }

    @AfterEach
    void deleteScratch() throws IOException {
        scratch.close();
    }

    // 1
    @Test
    void qemuImgInfoReportsTheExactSize() throws Exception {
        PeerCommand.requireInstalled("qemu-img");
        long size = 32L * MIB + 64 * KIB + 512;
        Path image = scratch.sparseFile("disk.img", size);
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image)) {
            String text = peer("qemu-img", "info", server.uri("disk")).stdout();
            assertThat(text).contains("file format: raw", "virtual size: 32.1 MiB (" + size + " bytes)",
                    "protocol type: nbd", "file length: 32.1 MiB (" + size + " bytes)");

            JsonNode json = new ObjectMapper().readTree(
                    peer("qemu-img", "info", "--output=json", server.uri("disk")).stdout());
            assertThat(json.path("virtual-size").asLong()).isEqualTo(size);
            assertThat(json.path("format").asText()).isEqualTo("raw");
            assertThat(json.path("filename").asText()).isEqualTo(server.uri("disk"));
            JsonNode protocol = json.path("children").path(0).path("info");
            assertThat(protocol.path("format").asText()).isEqualTo("nbd");
            assertThat(protocol.path("virtual-size").asLong()).isEqualTo(size);
        }
    }

    // 2
    @Test
    void qemuImgConvertWritesDataAndHolesExactly() throws Exception {
        PeerCommand.requireInstalled("qemu-img", "qemu-io");
        Path source = scratch.resolve("source.raw");
        peer("qemu-img", "create", "-q", "-f", "raw", source.toString(), "16M");
        peer("qemu-io", "-f", "raw",
                "-c", "write -P 0x5a 0 64k",
                "-c", "write -P 0x3c 200000 3000",
                "-c", "write -P 0xa5 1M 1M",
                "-c", "write -P 0x11 16773120 4096",
                source.toString());
        // The export starts full of non-zero bytes: the source's holes must be written as zeroes.
        Path image = scratch.resolve("disk.img");
        byte[] garbage = new byte[16 * MIB];
        Arrays.fill(garbage, (byte) 0xee);
        Files.write(image, garbage);

        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image)) {
            peer("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source.toString(), server.uri("disk"));
            PeerCommand.Result compare = peer("qemu-img", "compare", "-f", "raw", "-F", "raw",
                    source.toString(), server.uri("disk"));
            assertThat(compare.stdout()).contains("Images are identical.");
        }
        assertThat(Files.mismatch(source, image)).as("first differing byte of the backing file").isEqualTo(-1L);
    }

    // 3
    @Test
    void qemuIoWithExtendedHeaders() throws Exception {
        PeerCommand.requireInstalled("qemu-io");
        Path image = scratch.sparseFile("disk.img", 64L * MIB);
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image)) {
            PeerCommand.Result io = qemuIo(server.uri("disk"),
                    "write -P 0xab 0 1M", "read -P 0xab 0 1M",
                    // unaligned: neither offset nor length a multiple of 512
                    "write -P 0x11 1000 512", "read -P 0x11 1000 512",
                    "read -P 0xab 0 1000", "read -P 0xab 1512 1000",
                    "write -P 0x77 4097 333", "read -P 0x77 4097 333", "read -P 0xab 4430 1000",
                    "discard 128k 64k", "read -P 0 128k 64k", "read -P 0xab 192k 64k",
                    "write -P 0xcd 1M 64k", "write -z 1M 4k", "read -P 0 1M 4k", "read -P 0xcd 1052672 60k",
                    "write -z -u 1M 64k", "read -P 0 1M 64k",
                    "write -f -P 0x22 2M 4k", "read -P 0x22 2M 4k",
                    "write -f -z 3M 8k", "read -P 0 3M 8k",
                    "flush");
            assertThat(io.exitCode()).as(io.stdout() + io.stderr()).isZero();
            assertThat(io.stdout() + io.stderr()).doesNotContain("failed", "verification");
            assertThat(server.log()).as("qemu 10 negotiates extended headers").contains("transmission: extended replies");

            // What the peer saw is what the file holds.
            assertThat(ScratchDir.readAt(image, 1000, 512)).containsOnly(0x11);
            assertThat(ScratchDir.readAt(image, 0, 1000)).containsOnly(0xab);
            assertThat(ScratchDir.readAt(image, 4097, 333)).containsOnly(0x77);
            assertThat(ScratchDir.readAt(image, 128 * KIB, 64 * KIB)).containsOnly(0);
            assertThat(ScratchDir.readAt(image, MIB, 64 * KIB)).containsOnly(0);
            assertThat(ScratchDir.readAt(image, 2 * MIB, 4 * KIB)).containsOnly(0x22);

            // Past the end: qemu refuses on its side (as it does with qemu-nbd) and the server carries on.
            PeerCommand.Result past = qemuIo(server.uri("disk"), "read 67108352 1024");
            assertThat(past.exitCode()).isNotZero();
            assertThat(past.stdout() + past.stderr()).contains("read failed");
            past = qemuIo(server.uri("disk"), "write -P 0x1 67108352 1024");
            assertThat(past.exitCode()).isNotZero();
            assertThat(past.stdout() + past.stderr()).contains("write failed");
            PeerCommand.Result after = qemuIo(server.uri("disk"), "read -P 0xab 67108352 512".replace("0xab", "0"));
            assertThat(after.exitCode()).as(after.stdout() + after.stderr()).isZero();
            assertThat(after.stdout()).doesNotContain("verification");
        }
    }

    // 4
    @Test
    void qemuNbdListShowsFlagsContextsAndDescription() throws Exception {
        PeerCommand.requireInstalled("qemu-nbd");
        Path image = scratch.sparseFile("disk.img", 16L * MIB);
        Path readOnly = scratch.sparseFile("ro.img", 8L * MIB);
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image + ",description=Test disk",
                "--export", "ro=" + readOnly + ",readonly")) {
            List<String> lines = peer("qemu-nbd", "--list", "-b", "127.0.0.1", "-p", String.valueOf(server.port()))
                    .stdout().lines().toList();
            assertThat(lines).contains("exports available: 2");
            List<String> disk = exportBlock(lines, "disk");
            assertThat(disk).contains("  description: Test disk", "  size:  16777216",
                    "  transaction size: 64-bit", "  available meta contexts: 2", "   base:allocation",
                    "   qemu:allocation-depth");
            assertThat(flags(disk)).contains("block-status-payload", "multi", "trim", "zeroes", "fast-zero", "flush",
                    "fua", "cache", "df").doesNotContain("readonly");
            List<String> ro = exportBlock(lines, "ro");
            assertThat(ro).contains("  size:  8388608", "  transaction size: 64-bit", "   base:allocation");
            assertThat(flags(ro)).contains("readonly", "block-status-payload").doesNotContain("trim", "zeroes",
                    "fast-zero");

            // qemu-nbd serving the same kind of export is listed exactly alike.
            Path copy = scratch.sparseFile("copy.img", 16L * MIB);
            try (ServerProcess qemu = ServerProcess.qemuNbd("disk", copy, "-A", "-D", "Test disk")) {
                List<String> reference = peer("qemu-nbd", "--list", "-b", "127.0.0.1", "-p",
                        String.valueOf(qemu.port())).stdout().lines().toList();
                assertThat(disk).containsExactlyElementsOf(exportBlock(reference, "disk"));
            }
            Path roCopy = scratch.sparseFile("ro-copy.img", 8L * MIB);
            try (ServerProcess qemu = ServerProcess.qemuNbd("ro", roCopy, "-A", "-r")) {
                List<String> reference = peer("qemu-nbd", "--list", "-b", "127.0.0.1", "-p",
                        String.valueOf(qemu.port())).stdout().lines().toList();
                assertThat(ro).containsExactlyElementsOf(exportBlock(reference, "ro"));
            }
        }
    }

    // 5
    @Test
    void nbdinfoListAndMapMatchQemuNbd() throws Exception {
        PeerCommand.requireInstalled("nbdinfo", "qemu-nbd");
        Path ours = layoutImage("ours.img");
        Path theirs = layoutImage("theirs.img");
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + ours + ",description=Layout disk");
             ServerProcess qemu = ServerProcess.qemuNbd("disk", theirs, "-A", "-D", "Layout disk")) {
            String list = peer("nbdinfo", "--list", "nbd://127.0.0.1:" + server.port()).stdout();
            assertThat(list.lines().map(String::strip).toList()).contains("export=\"disk\":",
                    "description: Layout disk", "export-size: 16777216 (16M)", "base:allocation",
                    "is_read_only: false", "can_multi_conn: true", "can_fast_zero: true", "can_trim: true",
                    "can_zero: true", "can_flush: true", "can_fua: true", "can_cache: true",
                    "block_size_preferred: 4096");
            String reference = peer("nbdinfo", "--list", "nbd://127.0.0.1:" + qemu.port()).stdout();
            assertThat(list.replace(":" + server.port() + "/", ":PORT/"))
                    .isEqualTo(reference.replace(":" + qemu.port() + "/", ":PORT/"));

            List<String> map = words(peer("nbdinfo", "--map", server.uri("disk")).stdout());
            assertThat(map).containsExactly(
                    "0 4096 3 hole,zero",
                    "4096 4096 0 data",
                    "8192 1040384 3 hole,zero",
                    "1048576 65536 0 data",
                    "1114112 15654912 3 hole,zero",
                    "16769024 8192 0 data");
            assertThat(map).isEqualTo(words(peer("nbdinfo", "--map", qemu.uri("disk")).stdout()));
        }
    }

    // 6
    @Test
    void nbdcopyWithFourConnectionsBothWaysAndOnToQemuNbd() throws Exception {
        PeerCommand.requireInstalled("nbdcopy", "qemu-nbd");
        long size = 32L * MIB;
        Path source = scratch.sparseFile("source.raw", size);
        ScratchDir.writeAt(source, 0, random(8 * MIB, 1));
        ScratchDir.writeAt(source, 20L * MIB, random(MIB, 2));
        ScratchDir.writeAt(source, size - 4096, random(4096, 3));
        Path image = scratch.resolve("disk.img");
        Path qemuImage = scratch.resolve("qemu.img");
        byte[] garbage = new byte[(int) size];
        Arrays.fill(garbage, (byte) 0xee);
        Files.write(image, garbage);
        Files.write(qemuImage, garbage);

        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image);
             ServerProcess qemu = ServerProcess.qemuNbd("disk", qemuImage)) {
            peer("nbdcopy", "--connections=4", "--threads=4", source.toString(), server.uri("disk"));
            assertThat(Files.mismatch(source, image)).as("file -> server").isEqualTo(-1L);

            Path back = scratch.resolve("back.raw");
            peer("nbdcopy", "--connections=4", "--threads=4", server.uri("disk"), back.toString());
            assertThat(Files.mismatch(source, back)).as("server -> file").isEqualTo(-1L);

            peer("nbdcopy", "--connections=4", "--threads=4", server.uri("disk"), qemu.uri("disk"));
            assertThat(Files.mismatch(source, qemuImage)).as("nbd-node -> qemu-nbd").isEqualTo(-1L);

            long transmissions = server.log().lines().filter(l -> l.contains("transmission:")).count();
            assertThat(transmissions).as("nbdcopy used multi-conn against nbd-node").isGreaterThanOrEqualTo(12);
        }
    }

    // 7
    @Test
    void fioRandomReadWriteAndVerifiedWrites() throws Exception {
        PeerCommand.requireInstalled("fio");
        Path image = scratch.sparseFile("disk.img", 32L * MIB);
        ScratchDir.writeAt(image, 0, random(16 * MIB, 7));
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image)) {
            PeerCommand.Result fio = PeerCommand.run(LIMIT, "fio", "--ioengine=nbd", "--uri=" + server.uri("disk"),
                    "--bs=4k", "--iodepth=16",
                    "--name=mixed", "--rw=randrw", "--offset=0", "--size=16M", "--time_based", "--runtime=3",
                    "--name=verified", "--rw=randwrite", "--offset=16M", "--size=8M",
                    "--verify=crc32c", "--do_verify=1", "--verify_state_save=0");
            String output = fio.stdout() + fio.stderr();
            assertThat(fio.exitCode()).as(output).isZero();
            assertThat(output.split("err= 0", -1)).as(output).hasSize(3);
            assertThat(output).doesNotContainIgnoringCase("verify failed").doesNotContain("bad magic");
            assertThat(output.lines().filter(l -> l.startsWith("fio: ")))
                    .as("fio's own messages").allMatch(l -> l.equals("fio: connected to NBD server"));
            assertThat(server.log()).contains("closed after").doesNotContain("ERROR", "Exception");
        }
    }

    // 8
    @Test
    void libnbdRequestsAndOutOfBoundsErrorsMatchQemuNbd() throws Exception {
        PeerCommand.requireInstalled("qemu-nbd");
        assertThat(Path.of(PYTHON)).as("the python3 that has libnbd's bindings").isExecutable();
        Path script = scratch.resolve("requests.py");
        Files.writeString(script, LIBNBD_REQUESTS);
        Path ours = layoutImage("ours.img");
        Path theirs = layoutImage("theirs.img");
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + ours);
             ServerProcess qemu = ServerProcess.qemuNbd("disk", theirs)) {
            List<String> answers = peer(PYTHON, script.toString(), server.uri("disk")).stdout().lines().toList();
            assertThat(answers).contains(
                    "size 16777216",
                    "base:allocation True",
                    "can_multi_conn True",
                    "can_fast_zero True",
                    "can_cache True",
                    "extents [(0, 4096, 3), (4096, 4096, 0), (8192, 1040384, 3), (1048576, 65536, 0),"
                            + " (1114112, 15654912, 3), (16769024, 8192, 0)]",
                    "fast zero reads back zeroes True",
                    "cache ok",
                    "flush ok",
                    // zeroing without NO_HOLE punched the 64 KiB of data at 1 MiB, as qemu-nbd does
                    "extents after zero [(0, 4096, 3), (4096, 4096, 0), (8192, 16760832, 3), (16769024, 8192, 0)]",
                    "still usable True");
            assertThat(answers.stream().filter(a -> a.startsWith("oob ")))
                    .hasSize(10)
                    .allMatch(a -> a.endsWith(" EINVAL"), "every out-of-bounds request fails with EINVAL");

            List<String> reference = peer(PYTHON, script.toString(), qemu.uri("disk")).stdout().lines().toList();
            assertThat(answers).containsExactlyElementsOf(reference);
        }
        assertThat(Files.mismatch(ours, theirs)).isEqualTo(-1L);
    }

    // 9
    @Test
    void listCommandPrintsWhatQemuNbdListPrints() throws Exception {
        PeerCommand.requireInstalled("qemu-nbd");
        Path image = scratch.sparseFile("disk.img", 16L * MIB);
        Path readOnly = scratch.sparseFile("ro.img", 8L * MIB + 512);
        try (ServerProcess server = ServerProcess.nbdNode("--export", "disk=" + image + ",description=Test disk",
                "--export", "ro=" + readOnly + ",readonly,max-connections=1")) {
            List<String> ours = peer(java(), "-jar", jar(), "list", "nbd://127.0.0.1:" + server.port())
                    .stdout().lines().toList();
            List<String> qemu = peer("qemu-nbd", "--list", "-b", "127.0.0.1", "-p", String.valueOf(server.port()))
                    .stdout().lines().toList();
            assertThat(ours).contains("exports available: 2", " export: 'disk'", "  description: Test disk",
                    " export: 'ro'", "  size:  8389120", "  transaction size: 64-bit", "   base:allocation");
            assertThat(ours).containsExactlyElementsOf(qemu);
        }
    }

    // ---- helpers

    /**
     * 16 MiB, sparse, with data at page-aligned places: 4 KiB at 4 KiB, 64 KiB at 1 MiB and
     * the last 8 KiB. Written before serving, so allocation comes from the file system.
     */
    private Path layoutImage(String name) throws IOException {
        Path image = scratch.sparseFile(name, 16L * MIB);
        ScratchDir.writeAt(image, 4096, random(4096, 11));
        ScratchDir.writeAt(image, MIB, random(64 * KIB, 12));
        ScratchDir.writeAt(image, 16L * MIB - 8192, random(8192, 13));
        return image;
    }

    private static final String LIBNBD_REQUESTS = """
            import sys
            import nbd

            h = nbd.NBD()
            h.add_meta_context("base:allocation")
            h.connect_uri(sys.argv[1])
            size = h.get_size()
            print("size", size)
            print("base:allocation", h.can_meta_context("base:allocation"))
            print("can_multi_conn", h.can_multi_conn())
            print("can_fast_zero", h.can_fast_zero())
            print("can_cache", h.can_cache())

            def extents():
                found = []
                def collect(context, offset, entries, err):
                    if context == "base:allocation":
                        for i in range(0, len(entries), 2):
                            found.append((entries[i], entries[i + 1]))
                    return 0
                pos = 0
                for _ in range(10000):
                    if pos >= size:
                        break
                    start = len(found)
                    h.block_status(size - pos, pos, collect)
                    for length, flags in found[start:]:
                        pos += length
                    if len(found) == start:
                        raise Exception("no extents at %d" % pos)
                merged = []
                offset = 0
                for length, flags in found:
                    if merged and merged[-1][2] == flags:
                        merged[-1] = (merged[-1][0], merged[-1][1] + length, flags)
                    else:
                        merged.append((offset, length, flags))
                    offset += length
                return [(o, min(l, size - o), f) for o, l, f in merged if o < size]

            print("extents", extents())
            h.zero(65536, 1048576, nbd.CMD_FLAG_FAST_ZERO)
            print("fast zero reads back zeroes", h.pread(65536, 1048576) == bytes(65536))
            h.cache(65536, 4096)
            print("cache ok")
            h.flush()
            print("flush ok")
            print("extents after zero", extents())

            h.set_strict_mode(0)
            def attempt(name, call):
                try:
                    call()
                    print("oob", name, "OK")
                except nbd.Error as e:
                    print("oob", name, e.errno)
            attempt("pread", lambda: h.pread(4096, size))
            attempt("pread-straddling", lambda: h.pread(8192, size - 4096))
            attempt("pwrite", lambda: h.pwrite(b"x" * 4096, size))
            attempt("pwrite-straddling", lambda: h.pwrite(b"x" * 8192, size - 4096))
            attempt("zero", lambda: h.zero(4096, size))
            attempt("zero-straddling", lambda: h.zero(8192, size - 4096))
            attempt("trim", lambda: h.trim(4096, size))
            attempt("trim-straddling", lambda: h.trim(8192, size - 4096))
            attempt("cache", lambda: h.cache(4096, size))
            attempt("block-status", lambda: h.block_status(4096, size, lambda *args: 0))
            print("still usable", h.pread(4096, size - 4096) == h.pread(4096, size - 4096))
            h.shutdown()
            """;

    private static PeerCommand.Result peer(String... command) throws IOException, InterruptedException {
        return PeerCommand.run(LIMIT, command).assertSuccess();
    }

    private static PeerCommand.Result qemuIo(String uri, String... commands) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        for (String c : commands) {
            command.add("-c");
            command.add(c);
        }
        command.add(uri);
        return PeerCommand.run(LIMIT, command);
    }

    /** The lines of one export in qemu-nbd --list output, from its "export:" line to the next. */
    private static List<String> exportBlock(List<String> lines, String name) {
        int start = lines.indexOf(" export: '" + name + "'");
        assertThat(start).as("export '%s' listed in %s", name, lines).isNotNegative();
        int end = start + 1;
        while (end < lines.size() && !lines.get(end).startsWith(" export: ")) {
            end++;
        }
        return lines.subList(start, end);
    }

    private static List<String> flags(List<String> block) {
        String line = block.stream().filter(l -> l.startsWith("  flags: ")).findFirst().orElseThrow();
        String names = line.substring(line.indexOf('(') + 1, line.lastIndexOf(')')).strip();
        return List.of(names.split(" +"));
    }

    /** Lines with their runs of blanks collapsed, so column widths do not matter. */
    private static List<String> words(String text) {
        return text.lines().map(String::strip).filter(l -> !l.isEmpty()).map(l -> l.replaceAll("\\s+", " ")).toList();
    }

    private static byte[] random(int length, long seed) {
        byte[] bytes = new byte[length];
        new Random(seed).nextBytes(bytes);
        // Never all zero in a page, so every written page counts as data.
        for (int i = 0; i < length; i += 512) {
            bytes[i] |= 1;
        }
        return bytes;
    }


}
