"""NATS client protocol bytes for the load generators: frames, sockets with
TCP_NODELAY, the CONNECT/PING/PONG handshake and a small incremental parser
(for request-reply and for reading server answers; subscribers in throughput
runs count with ``counter.FrameCounter`` instead)."""

from __future__ import annotations

import json
import socket
import time

CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"name":"flowmq-bench","lang":"python"}\r\n'
# JetStream connections announce headers (pull status messages, 503 No
# Responders for a request nobody serves are header-only messages).
JS_CONNECT = (b'CONNECT {"verbose":false,"pedantic":false,"name":"flowmq-bench","lang":"python",'
              b'"headers":true,"no_responders":true}\r\n')
PING = b"PING\r\n"
PONG = b"PONG\r\n"
CRLF = b"\r\n"
MAX_LINE = 65536  # longest protocol line we accept from a server


class BenchError(Exception):
    """Something a run cannot go on with (connection refused, -ERR, timeout)."""


def connect(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection with TCP_NODELAY set."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def payload(size: int) -> bytes:
    return b"x" * size


def pub_frame(subject: bytes, data: bytes, reply: bytes = b"") -> bytes:
    if reply:
        return b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(data), data)
    return b"PUB %s %d\r\n%s\r\n" % (subject, len(data), data)


def sub_line(subject: bytes, sid: bytes, queue: bytes = b"") -> bytes:
    if queue:
        return b"SUB %s %s %s\r\n" % (subject, queue, sid)
    return b"SUB %s %s\r\n" % (subject, sid)


def msg_header(subject: bytes, sid: bytes, size: int) -> bytes:
    """The MSG line a subscriber gets for a message without reply subject."""
    return b"MSG %s %s %d\r\n" % (subject, sid, size)


class MsgParser:
    """Incremental parser for what a NATS server sends.

    ``feed(data)`` returns the complete operations as tuples:
    ``("MSG", subject, sid, reply, payload)``, ``("HMSG", subject, sid, reply,
    raw)``, ``("PING",)``, ``("PONG",)``, ``("+OK",)``, ``("-ERR", text)``,
    ``("INFO", dict)``, ``("?", line)`` for anything else.
    """

    def __init__(self):
        self._buf = b""

    def feed(self, data: bytes, until_pong: bool = False) -> list:
        """Parse what is complete; with ``until_pong``, stop after the first
        PONG and keep the bytes behind it (``rest()``)."""
        buf = self._buf + data if self._buf else data
        ops = []
        pos = 0
        end = len(buf)
        while pos < end:
            eol = buf.find(CRLF, pos)
            if eol < 0:
                if end - pos > MAX_LINE:
                    raise BenchError("protocol line from server longer than %d bytes" % MAX_LINE)
                break
            verb = buf[pos:pos + 4]
            if verb == b"MSG " or verb == b"HMSG":
                # MSG <subject> <sid> [reply] <size>; HMSG has <header size> before <size>
                kind, skip, with_reply = ("MSG", 4, 4) if verb == b"MSG " else ("HMSG", 5, 5)
                parts = buf[pos + skip:eol].split()
                if kind == "MSG" and len(parts) not in (3, 4):
                    raise BenchError("malformed MSG line %r" % buf[pos:eol][:200])
                size = int(parts[-1])
                stop = eol + 2 + size
                if stop + 2 > end:
                    break
                reply = parts[2] if len(parts) == with_reply else b""
                ops.append((kind, parts[0], parts[1], reply, buf[eol + 2:stop]))
                pos = stop + 2
            else:
                line = buf[pos:eol]
                pos = eol + 2
                word = line.split(b" ", 1)[0].upper()
                if word == b"PING":
                    ops.append(("PING",))
                elif word == b"PONG":
                    ops.append(("PONG",))
                    if until_pong:
                        break
                elif word == b"+OK":
                    ops.append(("+OK",))
                elif word == b"-ERR":
                    ops.append(("-ERR", line[5:].strip().strip(b"'").decode("utf-8", "replace")))
                elif word == b"INFO":
                    try:
                        ops.append(("INFO", json.loads(line[5:])))
                    except ValueError:
                        ops.append(("INFO", {}))
                else:
                    ops.append(("?", line))
        self._buf = buf[pos:]
        return ops

    def rest(self) -> bytes:
        """Take the bytes not parsed yet."""
        rest, self._buf = self._buf, b""
        return rest


def receive_until(sock: socket.socket, deadline: float):
    """Yield ``(data, perf_counter time)`` of each read until ``deadline``
    (a perf_counter time); BenchError if the server closes the connection."""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return
        if not data:
            raise BenchError("connection closed by the server")
        yield data, time.perf_counter()


def read_until_pong(sock: socket.socket, parser: MsgParser, deadline: float, info: dict = None) -> None:
    """Read until the server's PONG; answer its PINGs. What came after the
    PONG stays in the parser (``parser.rest()``). Raises BenchError on -ERR,
    on close and at the deadline."""
    for _ in range(1000000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError("no PONG from the server in time")
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise BenchError("no PONG from the server in time")
        if not data:
            raise BenchError("connection closed by the server")
        for op in parser.feed(data, until_pong=True):
            if op[0] == "PONG":
                return
            if op[0] == "-ERR":
                raise BenchError("server said -ERR '%s'" % op[1])
            if op[0] == "PING":
                sock.sendall(PONG)
            elif op[0] == "INFO" and info is not None:
                info.update(op[1])
    raise BenchError("no PONG from the server")


def handshake(sock: socket.socket, extra: bytes = b"", timeout: float = 30.0, info: dict = None,
              connect: bytes = CONNECT):
    """CONNECT (verbose off), ``extra`` (SUB lines ...), PING; wait for PONG,
    so the server has processed all of it. Returns the parser (with any bytes
    that came after the PONG still inside it)."""
    parser = MsgParser()
    sock.sendall(connect + extra + PING)
    read_until_pong(sock, parser, time.monotonic() + timeout, info)
    return parser


def server_info(host: str, port: int, timeout: float = 10.0) -> dict:
    """The INFO a server sends on connect (completed by a PING round trip)."""
    sock = connect(host, port, timeout)
    try:
        info = {}
        handshake(sock, timeout=timeout, info=info)
        return info
    finally:
        sock.close()
