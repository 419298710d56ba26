package io.kubenbd.node.storage;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class LinuxSyscallsTest {

    @Test
    void badDescriptorReportsEbadf() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buffer = arena.allocate(16);
            assertThatThrownBy(() -> LinuxSyscalls.pread(-1, buffer, 0, "fd -1"))
                    .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EBADF))
                    .hasMessage("pread fd -1: EBADF (Bad file descriptor)");
        }
    }

    @Test
    void seekDataPastLastDataReportsEnxio(@TempDir Path directory) throws IOException {
        Path file = Files.write(directory.resolve("small"), new byte[100]);
        int fd = LinuxSyscalls.open(file.toString(), LinuxSyscalls.O_RDONLY | LinuxSyscalls.O_CLOEXEC);
        try {
            assertThat(LinuxSyscalls.lseek(fd, 0, LinuxSyscalls.SEEK_HOLE, "small")).isEqualTo(100);
            assertThatThrownBy(() -> LinuxSyscalls.lseek(fd, 100, LinuxSyscalls.SEEK_DATA, "small"))
                    .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.ENXIO));
        } finally {
            LinuxSyscalls.close(fd, "small");
        }
    }

    @Test
    void ioctlOnRegularFileReportsEnotty(@TempDir Path directory) throws IOException {
        Path file = Files.write(directory.resolve("plain"), new byte[1]);
        try (NativeFile plain = NativeFile.open(file, true); Arena arena = Arena.ofConfined()) {
            assertThatThrownBy(() -> plain.ioctl(0x80081272L, arena.allocate(8), "ioctl(BLKGETSIZE64)"))
                    .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.ENOTTY))
                    .hasMessageContaining("ioctl(BLKGETSIZE64) " + file);
        }
    }

    @Test
    void statDescribesRegularFilesAndDevices(@TempDir Path directory) throws IOException {
        Path file = Files.write(directory.resolve("five"), new byte[5]);
        FileStatus regular = LinuxSyscalls.stat(file.toString());
        assertThat(regular.kind()).isEqualTo(FileStatus.Kind.REGULAR_FILE);
        assertThat(regular.size()).isEqualTo(5);

        FileStatus devNull = LinuxSyscalls.stat("/dev/null");
        assertThat(devNull.kind()).isEqualTo(FileStatus.Kind.OTHER);
        assertThat(devNull.deviceMajor()).isEqualTo(1);
        assertThat(devNull.deviceMinor()).isEqualTo(3);
        assertThat(LinuxSyscalls.stat(directory.toString()).kind()).isEqualTo(FileStatus.Kind.OTHER);
    }

    @Test
    void fadviseErrorComesFromReturnValue() {
        assertThatThrownBy(() -> LinuxSyscalls.posixFadvise(-1, 0, 0, LinuxSyscalls.POSIX_FADV_WILLNEED, "fd -1"))
                .isInstanceOfSatisfying(ErrnoException.class, e -> assertThat(e.errno()).isEqualTo(Errno.EBADF));
    }
}
