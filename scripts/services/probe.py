#!/usr/bin/env python3
"""Readiness probes for the local dev servers (standard library only).

    probe.py kafka HOST PORT      Kafka Metadata request (v4), needs >= 1 broker
    probe.py cql HOST PORT        CQL native protocol v4:
                                  SELECT release_version FROM system.local
    probe.py redis HOST PORT      RESP PING -> PONG

Prints a one-line summary and exits 0 when the server answered correctly,
1 otherwise (with the reason on stderr).
"""

from __future__ import annotations

import socket
import struct
import sys

TIMEOUT = 5.0


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf += chunk
    return buf


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated response")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int8(self) -> int:
        return int(struct.unpack(">b", self.take(1))[0])

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def uint16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def string16(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self.take(n).decode()

    def bytes32(self) -> bytes | None:
        n = self.int32()
        return None if n < 0 else self.take(n)


# --------------------------------------------------------------------- kafka
def kafka(host: str, port: int) -> str:
    client_id = b"chat-probe"
    # Request header v1 + Metadata v4 body (all topics, no auto-creation).
    body = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body += struct.pack(">ib", -1, 0)
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.settimeout(TIMEOUT)
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        r = Reader(recv_exact(s, size))
    if r.int32() != 1:
        raise ValueError("unexpected correlation id")
    r.int32()  # throttle_time_ms
    brokers = []
    for _ in range(r.int32()):
        node_id = r.int32()
        bhost = r.string16()
        bport = r.int32()
        r.string16()  # rack
        brokers.append(f"{node_id}@{bhost}:{bport}")
    cluster_id = r.string16()
    controller = r.int32()
    if not brokers:
        raise ValueError("metadata response lists no broker yet")
    return f"kafka cluster {cluster_id} brokers={','.join(brokers)} controller={controller}"


# ----------------------------------------------------------------------- cql
def cql_frame(opcode: int, body: bytes, stream: int = 0) -> bytes:
    return struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body


def cql_read(sock: socket.socket) -> tuple[int, bytes]:
    header = recv_exact(sock, 9)
    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", header)
    body = recv_exact(sock, length) if length else b""
    if opcode == 0x00:  # ERROR
        r = Reader(body)
        code = r.int32()
        raise RuntimeError(f"CQL error 0x{code:04x}: {r.string16()}")
    return opcode, body


def cql_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def cql(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.settimeout(TIMEOUT)
        startup = struct.pack(">H", 1) + cql_string("CQL_VERSION") + cql_string("3.0.0")
        s.sendall(cql_frame(0x01, startup))
        opcode, _ = cql_read(s)
        if opcode == 0x03:
            return "cql native transport up (authentication required, query skipped)"
        if opcode != 0x02:
            raise ValueError(f"unexpected reply to STARTUP: opcode 0x{opcode:02x}")
        query = b"SELECT release_version FROM system.local"
        body = struct.pack(">i", len(query)) + query + struct.pack(">HB", 0x0001, 0)
        s.sendall(cql_frame(0x07, body, stream=1))
        opcode, body = cql_read(s)
    if opcode != 0x08:
        raise ValueError(f"unexpected reply to QUERY: opcode 0x{opcode:02x}")
    r = Reader(body)
    if r.int32() != 2:  # Rows
        raise ValueError("QUERY did not return rows")
    flags = r.int32()
    ncols = r.int32()
    if flags & 0x0002:
        r.bytes32()  # paging state
    if flags & 0x0004:
        raise ValueError("no metadata in result")
    if flags & 0x0001:
        r.string16()
        r.string16()
    for _ in range(ncols):
        if not flags & 0x0001:
            r.string16()
            r.string16()
        r.string16()  # column name
        if r.uint16() != 0x000D:  # varchar
            raise ValueError("unexpected column type")
    rows = r.int32()
    if rows < 1:
        raise ValueError("system.local returned no row")
    version = r.bytes32()
    return f"cassandra {version.decode() if version else '?'}"


# --------------------------------------------------------------------- redis
def redis(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=TIMEOUT) as s:
        s.settimeout(TIMEOUT)
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            reply += chunk
    if reply.strip() != b"+PONG":
        raise ValueError(f"unexpected PING reply {reply[:80]!r}")
    return "redis PONG"


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in ("kafka", "cql", "redis"):
        sys.stderr.write(__doc__ or "")
        return 2
    probes = {"kafka": kafka, "cql": cql, "redis": redis}
    fn = probes[argv[1]]
    try:
        print(fn(argv[2], int(argv[3])))
        return 0
    except Exception as exc:
        sys.stderr.write(f"{argv[1]} probe of {argv[2]}:{argv[3]} failed: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
