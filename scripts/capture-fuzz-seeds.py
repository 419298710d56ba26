#!/usr/bin/env python3
"""Records real NBD traffic as seed corpora for the fuzz targets (run once; the output is committed).

qemu-nbd 10 serves a small sparse image on loopback; real clients (qemu-io and qemu-img with
extended headers, nbdinfo and nbdcopy from libnbd with structured replies) talk to it through a
recording proxy. Each connection gives:
  OptionDecoderFuzzTestInputs/options/<client>            client flags and options, as sent
  RequestDecoderFuzzTestInputs/requests/<client>          1 byte (1 = extended headers) + requests
  ReplyReaderFuzzTestInputs/optionReplies/<client>-<opt>  1 byte (the target's option index) + replies
Then a scripted client sends exactly the requests ReplyReaderFuzzTest has in flight, in each
reply style, and records qemu-nbd's answers as ReplyReaderFuzzTestInputs/replies/<style>.
Seeds are cut at 4096 bytes (libFuzzer's default -max_len).

Usage: python3 scripts/capture-fuzz-seeds.py   (needs qemu-utils and libnbd-bin, see PEERS.md)
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "nbd-node", "src", "test", "resources",
                    "io", "kubenbd", "node")
MAX_SEED = 4096
NBDMAGIC, IHAVEOPT, REPLY_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x0003E889045565A9
OPT_GO, OPT_EXPORT_NAME, OPT_STRUCTURED, OPT_EXTENDED, OPT_SET_META = 7, 1, 8, 11, 10
# ReplyReaderFuzzTest.optionReplies picks its option with the first byte, in this order.
TARGET_OPTIONS = [3, 6, 7, 8, 11, 10, 9, 5]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"wanted {n} bytes, got {len(data)}")
        data += chunk
    return data


class Proxy:
    """Forwards loopback connections to the server and keeps both directions of each."""

    def __init__(self, server_port):
        self.server_port = server_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.server_port))
            record = {"c2s": bytearray(), "s2c": bytearray()}
            with self.lock:
                self.connections.append(record)
            threading.Thread(target=self.pump, args=(client, server, record["c2s"]), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, record["s2c"]), daemon=True).start()

    @staticmethod
    def pump(source, sink, log):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                log.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        time.sleep(0.3)
        with self.lock:
            taken, self.connections = self.connections, []
        return taken

    def close(self):
        self.listener.close()


def split_client(c2s):
    """Client flags + options up to GO/EXPORT_NAME, then the transmission requests; and whether extended headers were asked."""
    at, extended_asked = 4, False
    while at + 16 <= len(c2s):
        magic, option, length = struct.unpack_from(">QII", c2s, at)
        if magic != IHAVEOPT:
            break
        at += 16 + length
        extended_asked |= option == OPT_EXTENDED
        if option in (OPT_GO, OPT_EXPORT_NAME):
            return bytes(c2s[:at]), bytes(c2s[at:]), extended_asked
    return bytes(c2s[:at]), b"", extended_asked


def split_server(s2c):
    """Option replies grouped by option, the end of the handshake, and whether extended headers were acknowledged."""
    at, replies, extended = 18, {}, False
    while at + 20 <= len(s2c):
        magic, option, kind, length = struct.unpack_from(">QIII", s2c, at)
        if magic != REPLY_MAGIC:
            break
        replies.setdefault(option, bytearray()).extend(s2c[at:at + 20 + length])
        at += 20 + length
        extended |= option == OPT_EXTENDED and kind == 1
        if option == OPT_GO and (kind == 1 or kind & 0x80000000):
            return replies, at, extended
    return replies, at, extended


def write_seed(target, method, name, data):
    directory = os.path.join(ROOT, *target.split("/"), method)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data[:MAX_SEED])


def run(command):
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def capture_clients(proxy):
    uri = f"nbd://127.0.0.1:{proxy.port}/disk"
    clients = {
        "qemu-io": ["qemu-io", "-f", "raw", "-c", "write -P 0xab 4096 4096", "-c", "read -P 0xab 4096 4096",
                    "-c", "read 0 512", "-c", "flush", "-c", "discard 8192 4096", "-c", "write -z 16384 4096",
                    "-c", "aio_write -P 0x11 0 512", "-c", "aio_write -P 0x12 512 512", "-c", "aio_flush", uri],
        "qemu-img-map": ["qemu-img", "map", "--output=json", "--image-opts",
                         f"driver=nbd,host=127.0.0.1,port={proxy.port},export=disk"],
        "qemu-img-info": ["qemu-img", "info", uri],
        "nbdinfo-list": ["nbdinfo", "--list", f"nbd://127.0.0.1:{proxy.port}"],
        "nbdinfo-map": ["nbdinfo", "--map", uri],
        "nbdcopy": ["nbdcopy", uri, "null:"],
    }
    for name, command in clients.items():
        run(command)
        for i, record in enumerate(proxy.take()):
            suffix = "" if i == 0 else f"-{i}"
            handshake, requests, extended_asked = split_client(record["c2s"])
            replies, end, extended = split_server(record["s2c"])
            write_seed("protocol/OptionDecoderFuzzTestInputs", "options", name + suffix, handshake)
            if requests:
                write_seed("protocol/RequestDecoderFuzzTestInputs", "requests", name + suffix,
                           bytes([1 if extended else 0]) + requests)
            for option, data in replies.items():
                if option in TARGET_OPTIONS:
                    write_seed("client/ReplyReaderFuzzTestInputs", "optionReplies", f"{name}{suffix}-opt{option}",
                               bytes([TARGET_OPTIONS.index(option)]) + data)


def option(sock, code, data=b""):
    sock.sendall(struct.pack(">QII", IHAVEOPT, code, len(data)) + data)
    replies = []
    while True:
        magic, opt, kind, length = struct.unpack(">QIII", recv_exact(sock, 20))
        payload = recv_exact(sock, length)
        replies.append((kind, payload))
        if kind == 1 or kind & 0x80000000:
            return replies


def string32(s):
    return struct.pack(">I", len(s)) + s.encode()


def capture_replies(port):
    """The requests ReplyReaderFuzzTest has in flight (cookies 1 to 8), in each reply style."""
    for style in ("simple", "structured", "extended"):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        recv_exact(sock, 18)
        sock.sendall(struct.pack(">I", 3))
        if style == "structured":
            option(sock, OPT_STRUCTURED)
        elif style == "extended":
            option(sock, OPT_EXTENDED)
        if style != "simple":
            option(sock, OPT_SET_META, string32("disk") + struct.pack(">I", 2) + string32("base:allocation")
                   + string32("qemu:allocation-depth"))
        option(sock, OPT_GO, string32("disk") + struct.pack(">H", 0))
        requests = [(0, 0, 1, 512, 1024), (4, 0, 2, 65536, 2048), (0, 1, 3, 0, 512), (0, 3, 4, 0, 0),
                    (0, 4, 5, 4096, 4096), (0, 7, 6, 0, 1 << 20), (8, 7, 7, 512, 4096), (0, 6, 8, 8192, 8192)]
        for flags, kind, cookie, offset, length in requests:
            if style == "extended":
                header = struct.pack(">IHHQQQ", 0x21E41C71, flags, kind, cookie, offset, length)
            else:
                header = struct.pack(">IHHQQI", 0x25609513, flags, kind, cookie, offset, length)
            sock.sendall(header + (b"\x5a" * length if kind == 1 else b""))
        # Everything qemu-nbd answers, until it has been quiet for a second.
        sock.settimeout(1.0)
        received = bytearray()
        try:
            while data := sock.recv(65536):
                received.extend(data)
        except socket.timeout:
            pass
        sock.settimeout(10)
        sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 99, 0, 0) if style != "extended"
                     else struct.pack(">IHHQQQ", 0x21E41C71, 0, 2, 99, 0, 0))
        sock.close()
        write_seed("client/ReplyReaderFuzzTestInputs", "replies", style,
                   bytes([("simple", "structured", "extended").index(style)]) + bytes(received))


def main():
    with tempfile.TemporaryDirectory() as scratch:
        image = os.path.join(scratch, "disk.img")
        with open(image, "wb") as f:
            f.truncate(1 << 20)
            f.seek(0)
            f.write(b"\x42" * 1024)
            f.seek(65536 + 1024)
            f.write(b"\x43" * 512)
        port = free_port()
        server = subprocess.Popen(["qemu-nbd", "-t", "-f", "raw", "-x", "disk", "-b", "127.0.0.1", "-p", str(port),
                                   "-e", "4", "-A", image])
        proxy = None
        try:
            wait_for(port)
            proxy = Proxy(port)
            capture_clients(proxy)
            capture_replies(port)
        finally:
            if proxy:
                proxy.close()
            server.terminate()
            server.wait(timeout=10)
    print("seeds written under", os.path.normpath(ROOT))


if __name__ == "__main__":
    sys.exit(main())
