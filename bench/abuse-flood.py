#!/usr/bin/env python3
"""Flood an NBD server with clients that never read, while a good client reads 4 KiB blocks.

The same flood as nbd-node's AbuseIT: option flooders (NBD_OPT_INFO over and over) and read
flooders (pipelined READs of 32 MiB or 4 KiB, simple replies) from 127.0.0.2-9, a good client
on 127.0.0.1 timing one 4 KiB read at a time, the server's VmRSS sampled from /proc.
Prints one JSON line. Every loop is bounded by the flood duration; all sockets are closed.

usage: abuse-flood.py PORT EXPORT SERVER_PID [SECONDS] [OPTION_FLOODERS] [READ_FLOODERS] [SMALL_READ_FLOODERS]

The flood stops early when the server's RSS passes ABUSE_RSS_CAP_MIB (default 3072): this
machine is shared, and a server that balloons has shown what it does.
"""
import json
import os
import threading
import random
import socket
import struct
import sys
import time

IHAVEOPT = 0x49484156454F5054
REQUEST = 0x25609513
SIMPLE_REPLY = 0x67446698
OPT_EXPORT_NAME, OPT_INFO = 1, 6


def rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return -1
    return -1


def connect(port, local, rcvbuf=None, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((local, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def export_name(s, name):
    recv_exactly(s, 18)
    data = name.encode()
    s.sendall(struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, len(data)) + data)
    recv_exactly(s, 10)  # size and flags (no zeroes)


def options_stream(name):
    data = name.encode()
    option = struct.pack(">QII", IHAVEOPT, OPT_INFO, 4 + len(data) + 2) + struct.pack(">I", len(data)) + data + b"\0\0"
    return option * 2000


def reads_stream(length, size, seed):
    rnd = random.Random(seed)
    return b"".join(struct.pack(">IHHQQI", REQUEST, 0, 0, i, rnd.randrange(size // length) * length, length)
                    for i in range(1000))


class Flooder:
    def __init__(self, port, local, name, read_length, size):
        self.port, self.local, self.name, self.read_length, self.size = port, local, name, read_length, size
        self.sock = None
        self.buf = b""
        self.pos = 0

    def reconnect(self):
        self.close()
        s = connect(self.port, self.local, rcvbuf=4096)
        if self.read_length:
            export_name(s, self.name)
            self.buf = reads_stream(self.read_length, self.size, id(self))
        else:
            s.sendall(struct.pack(">I", 3))
            self.buf = options_stream(self.name)
        s.setblocking(False)
        self.sock, self.pos = s, 0

    def push(self):
        if self.sock is None:
            self.reconnect()
        try:
            n = self.sock.send(self.buf[self.pos:self.pos + 65536])
        except BlockingIOError:
            return 0
        self.pos = (self.pos + n) % len(self.buf)
        return n

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def good_read(s, offset):
    s.sendall(struct.pack(">IHHQQI", REQUEST, 0, 0, 1, offset, 4096))
    magic, error, _ = struct.unpack(">IIQ", recv_exactly(s, 16))
    if magic != SIMPLE_REPLY or error:
        raise ConnectionError(f"bad reply magic {magic:#x} error {error}")
    recv_exactly(s, 4096)


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, max(0, int(p * len(v) + 0.999999) - 1))] * 1000, 2)


def main():
    port, name, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 20
    n_options = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    n_reads = int(sys.argv[6]) if len(sys.argv) > 6 else 100
    n_small = int(sys.argv[7]) if len(sys.argv) > 7 else 20
    size = 1 << 30
    good = connect(port, "127.0.0.1", timeout=10)
    export_name(good, name)
    flooders = [Flooder(port, f"127.0.0.{2 + i % 4}", name, 0, size) for i in range(n_options)]
    flooders += [Flooder(port, f"127.0.0.{6 + i % 4}", name, 4096 if i < n_small else 32 << 20, size)
                 for i in range(n_reads)]
    latencies, failures, reconnects = [], 0, 0
    cap = int(os.environ.get("ABUSE_RSS_CAP_MIB", "3072")) << 20
    state = {"peak": rss(pid), "cap_hit": False, "stop": False}

    def sample():
        while not state["stop"]:
            now = rss(pid)
            state["peak"] = max(state["peak"], now)
            if now > cap:
                state["cap_hit"] = True
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for f in flooders:
            try:
                f.reconnect()
            except OSError:
                f.close()  # refused now; push() connects it again
        end = time.monotonic() + seconds
        while time.monotonic() < end and not state["cap_hit"]:
            for f in flooders:
                try:
                    f.push()
                except OSError:
                    f.close()
                    reconnects += 1
            start = time.monotonic()
            try:
                if good is None:
                    good = connect(port, "127.0.0.1", timeout=10)
                    export_name(good, name)
                good_read(good, random.randrange(size // 4096) * 4096)
                latencies.append(time.monotonic() - start)
            except OSError:
                failures += 1
                if good is not None:
                    good.close()
                good = None
            time.sleep(0.002)
    finally:
        state["stop"] = True
        sampler.join(2)
        for f in flooders:
            f.close()
        if good is not None:
            good.close()
    alive = rss(pid) >= 0
    print(json.dumps({"rss_peak_mib": state["peak"] >> 20, "rss_cap_hit": state["cap_hit"], "server_alive": alive, "good_reads": len(latencies),
                      "good_failures": failures, "p50_ms": percentile(latencies, 0.5),
                      "p99_ms": percentile(latencies, 0.99), "max_ms": percentile(latencies, 1.0),
                      "flooder_reconnects": reconnects}))


if __name__ == "__main__":
    main()
