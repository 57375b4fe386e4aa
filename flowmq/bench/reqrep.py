"""The worker processes of the request-reply scenario.

A requester subscribes to its own inbox ``_INBOX.<token>.*`` and does
sequential requests: PUB to the service subject with the reply subject
``_INBOX.<token>.<n>``, then waits for that reply; it records each round
trip in microseconds. A responder is a member of a queue group on the
service subject and answers every request at once by publishing the same
payload to its reply subject (all the answers of one read in one send).
"""

from __future__ import annotations

import array
import os
import socket
import time

from flowmq.bench import protocol
from flowmq.bench.worker import Envelope

_POLL = 0.25
_MAX_CONSECUTIVE_TIMEOUTS = 3


def requester(slot, opts, subject, size, count, barrier, counters, results):
    result = {"role": "req", "slot": slot, "requests": 0, "answered": 0, "late": 0,
              "start": None, "end": None, "latencies": b"", "errors": []}
    with Envelope("requester", barrier, results, result) as env:
        token = b"_INBOX.bench%d_%d_%s" % (os.getpid(), slot, os.urandom(4).hex().encode())
        sock = env.connect(opts["host"], opts["port"])
        parser = protocol.handshake(sock, protocol.sub_line(token + b".*", b"1"), opts["setup_timeout"])
        parser.rest()
        data = protocol.payload(size)
        head = b"PUB %s %s." % (subject, token)
        tail = b" %d\r\n%s\r\n" % (size, data)
        latencies = array.array("d")
        timeout = min(5.0, opts["idle_timeout"])
        env.start(opts["setup_timeout"])
        deadline = time.monotonic() + opts["max_time"]
        result["start"] = time.monotonic()
        timeouts = 0
        answered = 0
        for n in range(count):
            want = token + b".%d" % n
            t0 = time.perf_counter()
            sock.sendall(head + b"%d" % n + tail)
            got = _wait_reply(sock, parser, want, t0 + timeout, result)
            if got is None:
                result["errors"].append("requester: no reply to request %d within %.1f s" % (n, timeout))
                timeouts += 1
                result["requests"] = n + 1
                if timeouts >= _MAX_CONSECUTIVE_TIMEOUTS:
                    result["errors"].append("requester: gave up after %d requests without reply" % timeouts)
                    break
                continue
            timeouts = 0
            latencies.append((got - t0) * 1e6)
            answered += 1
            result["requests"] = n + 1
            counters[slot] = answered
            if time.monotonic() > deadline:
                result["errors"].append("requester: ran out of time (--max-time)")
                break
        result["end"] = time.monotonic()
        result["answered"] = answered
        result["latencies"] = latencies.tobytes()


def _wait_reply(sock, parser, want: bytes, deadline: float, result):
    """The perf_counter time the reply ``want`` arrived, or None at the deadline."""
    for data, now in protocol.receive_until(sock, deadline):
        found = None
        for op in parser.feed(data):
            kind = op[0]
            if kind == "MSG" or kind == "HMSG":
                if op[1] == want:
                    found = now
                else:
                    result["late"] += 1
            elif kind == "PING":
                sock.sendall(protocol.PONG)
            elif kind == "-ERR":
                raise protocol.BenchError("server said -ERR '%s'" % op[1])
        if found is not None:
            return found
    return None


def responder(slot, opts, subject, group, barrier, stop, counters, results):
    result = {"role": "rep", "slot": slot, "answered": 0, "errors": []}
    with Envelope("responder", barrier, results, result) as env:
        sock = env.connect(opts["host"], opts["port"])
        parser = protocol.handshake(sock, protocol.sub_line(subject, b"1", group), opts["setup_timeout"])
        env.start(opts["setup_timeout"])
        sock.settimeout(_POLL)
        deadline = time.monotonic() + opts["max_time"]
        answered = 0
        pending = parser.rest()
        limit = int(opts["max_time"] / _POLL) + 100000000
        for _ in range(limit):
            if pending:
                data, pending = pending, b""
            else:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    if stop.is_set() or time.monotonic() > deadline:
                        break
                    continue
                if not data:
                    result["errors"].append("responder: connection closed by the server")
                    break
            out = []
            replies = 0
            for op in parser.feed(data):
                kind = op[0]
                if kind == "MSG":
                    if op[3]:
                        out.append(protocol.pub_frame(op[3], op[4]))
                        replies += 1
                elif kind == "PING":
                    out.append(protocol.PONG)
                elif kind == "-ERR":
                    raise protocol.BenchError("server said -ERR '%s'" % op[1])
            if out:
                sock.sendall(b"".join(out))
                answered += replies
                counters[slot] = answered
                # Its measured window ends with its last reply, not when it is told to stop.
                env.end()
            if time.monotonic() > deadline:
                break
        result["answered"] = answered
