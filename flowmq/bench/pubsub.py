"""The worker processes of the throughput scenarios: publishers and subscribers.

A publisher sends pre-built batches of PUB frames, one ``sendall`` per batch,
then PING and waits for PONG (so the server has read everything). A
subscriber SUBs, confirms it with PING/PONG, and counts MSG frames with
``counter.FrameCounter``. Both wait at a shared barrier, so that timing starts
only when every subscriber is in place. Each reports one dict on the results
queue; progress goes into a shared array slot.
"""

from __future__ import annotations

import socket
import time

from flowmq.bench import protocol
from flowmq.bench.counter import FrameCounter
from flowmq.bench.worker import Envelope

_POLL = 0.25  # seconds a blocked receive waits before looking at the stop event


def publisher(slot, opts, subject, size, count, barrier, stop, counters, results):
    result = {"role": "pub", "slot": slot, "sent": 0, "start": None, "sent_end": None,
              "end": None, "errors": []}
    with Envelope("publisher", barrier, results, result) as env:
        sock = env.connect(opts["host"], opts["port"])
        parser = protocol.handshake(sock, timeout=opts["setup_timeout"])
        frame = protocol.pub_frame(subject, protocol.payload(size))
        per_batch = max(1, opts["batch_bytes"] // len(frame))
        batch = frame * per_batch
        full, rest = divmod(count, per_batch)
        barrier.wait(opts["setup_timeout"])
        sock.settimeout(opts["send_timeout"])
        deadline = time.monotonic() + opts["max_time"]
        result["start"] = time.monotonic()
        sent = 0
        stopped = None
        for i in range(full):
            sock.sendall(batch)
            sent += per_batch
            counters[slot] = result["sent"] = sent
            if not i & 15 and sent < count:
                if time.monotonic() > deadline:
                    stopped = "ran out of time (--max-time)"
                elif stop.is_set():
                    stopped = "the subscribers gave up"
                if stopped:
                    result["errors"].append("publisher: stopped after %d of %d messages: %s"
                                            % (sent, count, stopped))
                    break
        if rest and not stopped:
            sock.sendall(frame * rest)
            sent += rest
            counters[slot] = result["sent"] = sent
        result["sent_end"] = time.monotonic()
        sock.sendall(protocol.PING)
        protocol.read_until_pong(sock, parser, time.monotonic() + opts["idle_timeout"] + opts["send_timeout"])
        result["end"] = time.monotonic()


def subscriber(slot, opts, subject, size, queue_group, expected, barrier, stop, counters, results):
    """``expected`` is the count this subscriber stops at (None for a queue
    group member, which stops when the coordinator sets ``stop``)."""
    result = {"role": "sub", "slot": slot, "received": 0, "other": 0, "first": None,
              "last": None, "errors": [], "pings": 0}
    first = last = None
    with Envelope("subscriber", barrier, results, result) as env:
        sock = env.connect(opts["host"], opts["port"])
        parser = protocol.handshake(
            sock, protocol.sub_line(subject, b"1", queue_group), opts["setup_timeout"])
        counter = FrameCounter(protocol.msg_header(subject, b"1", size), size)
        try:
            counter.feed(parser.rest())
            barrier.wait(opts["setup_timeout"])
            sock.settimeout(_POLL)
            now = time.monotonic()
            idle_since = now
            deadline = now + opts["max_time"]
            reads = 0
            limit = int(opts["max_time"] / _POLL) + 10 * (expected or 10 ** 9) + 10
            for _ in range(limit):
                if expected is not None and counter.count + counter.other >= expected:
                    break
                before = counter.count + counter.other
                try:
                    n = counter.recv(sock)
                except socket.timeout:
                    now = time.monotonic()
                    if stop.is_set() or now - idle_since > opts["idle_timeout"] or now > deadline:
                        break
                    continue
                now = time.monotonic()
                if not n:
                    result["errors"].append("subscriber: connection closed by the server")
                    break
                if counter.count + counter.other != before:
                    if first is None:
                        first = now
                    last = now
                    counters[slot] = counter.count
                idle_since = now
                reads += 1
                if not reads & 63 and stop.is_set():
                    break
                reply = counter.take_reply()
                if reply:
                    sock.sendall(reply)
                if counter.errors or now > deadline:
                    break
            result["errors"].extend("subscriber: server said -ERR '%s'" % e for e in counter.errors)
        finally:  # what was counted counts, whatever ended the run
            counters[slot] = counter.count
            result.update(received=counter.count, other=counter.other, first=first, last=last,
                          pings=counter.pings, nbytes=counter.nbytes)
