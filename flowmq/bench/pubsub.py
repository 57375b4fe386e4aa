"""The worker processes of the throughput scenarios: publishers and subscribers.

A publisher sends pre-built batches of PUB frames, one ``sendall`` per batch
(``send_batches``), then PING and waits for PONG (so the server has read
everything). A subscriber SUBs, confirms it with PING/PONG, and counts MSG
frames with ``counter.FrameCounter`` (``receive``). Both wait at a shared
barrier, so that timing starts only when every subscriber is in place. Each
reports one dict on the results queue; progress goes into a shared array
slot. ``send_batches``, ``receive`` and the reports are shared with the
MQTT workers (``mqttpubsub``).
"""

from __future__ import annotations

import socket
import time

from flowmq.bench import protocol
from flowmq.bench.counter import FrameCounter
from flowmq.bench.worker import Envelope

_POLL = 0.25  # seconds a blocked receive waits before looking at the stop event
NAP_BELOW = 16384  # bytes: a smaller read is followed by receive()'s nap, if it has one


def publisher(slot, opts, subject, size, count, barrier, stop, counters, results):
    result = new_publisher_result(slot)
    with Envelope("publisher", barrier, results, result) as env:
        sock = env.connect(opts["host"], opts["port"])
        parser = protocol.handshake(sock, timeout=opts["setup_timeout"])
        frame = protocol.pub_frame(subject, protocol.payload(size))
        env.start(opts["setup_timeout"])
        send_batches(sock, frame, count, opts, stop, counters, slot, result)
        sock.sendall(protocol.PING)
        protocol.read_until_pong(sock, parser, time.monotonic() + opts["idle_timeout"] + opts["send_timeout"])
        result["end"] = time.monotonic()


def new_publisher_result(slot) -> dict:
    """A publisher's report: ``start`` when it began sending, ``sent_end``
    when the last frame was written, ``end`` when the server confirmed it
    had read everything."""
    return {"role": "pub", "slot": slot, "sent": 0, "start": None, "sent_end": None, "end": None, "errors": []}


def send_batches(sock, frame: bytes, count: int, opts, stop, counters, slot, result) -> None:
    """Send ``count`` copies of ``frame`` in batches of --batch-bytes, one
    ``sendall`` each; stop early at --max-time or when ``stop`` is set."""
    per_batch = max(1, opts["batch_bytes"] // len(frame))
    batch = frame * per_batch
    full, rest = divmod(count, per_batch)
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
                result["errors"].append("publisher: stopped after %d of %d messages: %s" % (sent, count, stopped))
                break
    if rest and not stopped:
        sock.sendall(frame * rest)
        sent += rest
        counters[slot] = result["sent"] = sent
    result["sent_end"] = time.monotonic()


def subscriber(slot, opts, subject, size, expected, barrier, stop, counters, results):
    """``expected`` is the count this subscriber stops at (None for a member
    of the queue group ``opts["queue_group"]``, which stops when the
    coordinator sets ``stop``)."""
    result = new_subscriber_result(slot)
    with Envelope("subscriber", barrier, results, result) as env:
        sock = env.connect(opts["host"], opts["port"])
        parser = protocol.handshake(
            sock, protocol.sub_line(subject, b"1", opts.get("queue_group", b"")), opts["setup_timeout"])
        counter = FrameCounter(protocol.msg_header(subject, b"1", size), size)
        try:
            counter.feed(parser.rest())
            env.start(opts["setup_timeout"])
            receive(sock, counter, opts, expected, stop, counters, slot, env)
            result["errors"].extend("subscriber: server said -ERR '%s'" % e for e in counter.errors)
        finally:
            result["pings"] = counter.pings


def new_subscriber_result(slot) -> dict:
    """A subscriber's report: ``first`` and ``last`` are the times the first
    and the last message arrived."""
    return {"role": "sub", "slot": slot, "received": 0, "other": 0, "first": None, "last": None, "errors": []}


def receive(sock, counter, opts, expected, stop, counters, slot, env, nap: float = 0.0) -> None:
    """Count what arrives with ``counter`` (a ``counter.StreamCounter``),
    sending what it owes the server after each read, until ``expected``
    frames, ``stop``, --timeout of silence, --max-time or an error. The
    envelope's measured window ends with the last message.

    With ``nap``, a read of less than NAP_BELOW bytes is followed by a
    sleep of ``nap`` seconds, so that the next read takes what arrived
    meanwhile at once: a server that writes each message on its own
    (mosquitto) would otherwise cost the subscriber a read per message,
    and the subscribers, not the server, would use up the CPU. Only for
    subscribers that owe the server nothing (QoS 0): the socket buffers
    hold far more than a nap's worth of messages."""
    result = env.result
    first = last = last_cpu = None
    try:
        sock.settimeout(_POLL)
        now = time.monotonic()
        idle_since = now
        deadline = now + opts["max_time"]
        reads = 0
        # A read takes at least one byte: a large frame may come in many.
        limit = int(opts["max_time"] / _POLL) + 10 * (expected or 10 ** 9) * counter.frame_len + 10
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
                last_cpu = time.process_time()
                counters[slot] = counter.count
            idle_since = now
            reads += 1
            if n < NAP_BELOW and nap:
                time.sleep(nap)
            if not reads & 63 and stop.is_set():
                break
            reply = counter.take_reply()
            if reply:
                sock.sendall(reply)
            if counter.errors or now > deadline:
                break
    finally:  # what was counted counts, whatever ended the run
        counters[slot] = counter.count
        result.update(received=counter.count, other=counter.other, first=first, last=last, nbytes=counter.nbytes)
        env.end(last, last_cpu)
