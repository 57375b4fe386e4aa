"""Slow consumers and flow control, over real sockets.

A subscriber that takes nothing must not hold back the publishers (nor,
through them, every other subscriber): it is cut off as a slow consumer
after ``nats.stall_deadline`` without holding anybody. A reader that takes
data but cannot keep up is cut off after ``nats.write_deadline``, and the
log says so. Flow control still slows fast publishers down to what a
reading subscriber takes, losing nothing.
"""

from __future__ import annotations

import re
import statistics
import threading
import time

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from conftest import RawClient

PAYLOAD = b"x" * 1024
PUB = b"PUB feed 1024\r\n" + PAYLOAD + b"\r\n"
FRAME = b"MSG feed 1 1024\r\n" + PAYLOAD + b"\r\n"
PER_BATCH = 20  # messages per 10 ms: 2,000 msgs/s, about 2 MB/s


@pytest.fixture
def slow_consumer_log():
    """The broker's "slow consumer" log lines, as they are logged."""
    lines = []

    def observe(event):
        text = formatEvent(event)
        if "slow consumer" in text:
            lines.append(text)

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def _lines_about(lines: list, client: RawClient) -> list:
    """The log lines that name ``client`` (by its address, as the broker sees it)."""
    peer = "127.0.0.1:%d:" % client.sock.getsockname()[1]
    return [line for line in lines if peer in line]


def _wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class PacedPublisher(threading.Thread):
    """Publishes PER_BATCH messages to ``feed`` every 10 ms on a fixed
    schedule (so it catches up after being held) until ``finish()``."""

    def __init__(self, port: int):
        threading.Thread.__init__(self, daemon=True)
        # A publisher held for 10 s fails the test (the kernel buffers take a few seconds first).
        self.client = RawClient(port, timeout=10.0)
        self.client.handshake()
        self.sent = 0
        self.error = None
        self._done = threading.Event()

    def run(self):
        start = time.monotonic()
        batch = 0
        try:
            while not self._done.is_set():
                delay = start + batch * 0.01 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.client.send(PUB * PER_BATCH)
                self.sent += PER_BATCH
                batch += 1
        except OSError as exc:
            self.error = exc

    def finish(self) -> None:
        """Stop publishing; a PING round trip makes sure the broker has read it all."""
        self._done.set()
        self.join(60)
        assert self.error is None, "the publisher was held back: %r" % self.error
        self.client.send(b"PING\r\n")
        assert self.client.read_line() == b"PONG"


class CountingReader(threading.Thread):
    """Reads everything a subscriber gets, noting when each byte came."""

    def __init__(self, client: RawClient):
        threading.Thread.__init__(self, daemon=True)
        self.client = client
        self.data = bytearray()
        self.progress = [(time.monotonic(), 0)]  # (when, bytes received so far)
        self._done = threading.Event()
        client.sock.settimeout(0.2)

    def run(self):
        while not self._done.is_set():
            try:
                chunk = self.client.sock.recv(65536)
            except OSError:  # the timeout: look at _stop again
                continue
            if not chunk:
                break
            self.data += chunk
            self.progress.append((time.monotonic(), len(self.data)))

    def finish(self) -> None:
        self._done.set()
        self.join(60)

    def messages_by(self, when: float) -> int:
        received = 0
        for at, size in self.progress:
            if at > when:
                break
            received = size
        return received // len(FRAME)


def test_subscribers_that_take_nothing_hold_back_nobody(start_broker, slow_consumer_log):
    """A healthy subscriber gets a steady share of a steady publisher while
    subscribers to '>' that never read join every 2 s; those are cut off
    as slow consumers because they took nothing. write_deadline is long,
    so that only the stall rule can cut them off during the test (and so
    that their farewell waits for us to read it)."""
    broker = start_broker(**{"nats.write_deadline": 30.0})
    healthy = RawClient(broker.port)
    healthy.handshake()
    healthy.subscribe(b"feed")
    reader = CountingReader(healthy)
    reader.start()
    publisher = PacedPublisher(broker.port)
    started = time.monotonic()
    publisher.start()
    stalled = []
    joins = [started + 1.0 + 2.0 * i for i in range(4)]
    for join in joins:
        time.sleep(max(0.0, join - time.monotonic()))
        client = RawClient(broker.port, rcvbuf=4096)
        client.handshake()
        client.send(b"SUB > 1\r\n")  # and never read again
        stalled.append(client)
    ended = started + 12.0
    time.sleep(max(0.0, ended - time.monotonic()))
    publisher.finish()
    _wait_for(lambda: len(reader.data) >= publisher.sent * len(FRAME))
    reader.finish()

    assert len(reader.data) == publisher.sent * len(FRAME)
    assert reader.data == FRAME * publisher.sent
    # Messages received in each second from the first join to the end of publishing.
    per_second = [reader.messages_by(t + 1.0) - reader.messages_by(t)
                  for t in [joins[0] + i for i in range(int(ended - joins[0]))]]
    assert min(per_second) >= statistics.median(per_second) / 4, per_second
    assert min(per_second) > 0, per_second

    assert _wait_for(lambda: all(_lines_about(slow_consumer_log, c) for c in stalled)), slow_consumer_log
    for client in stalled:
        [line] = _lines_about(slow_consumer_log, client)
        assert "took nothing for" in line, line
        assert client.read_until_closed().endswith(b"-ERR 'Slow Consumer'\r\n")
        client.close()
    assert not _lines_about(slow_consumer_log, healthy)
    assert not _lines_about(slow_consumer_log, publisher.client)
    healthy.close()
    publisher.client.close()


def test_a_reader_that_cannot_keep_up_is_cut_off_for_that(start_broker, slow_consumer_log):
    """A reader that takes 4 KB every 0.5 s from a 2 MB/s feed is cut off
    after write_deadline; the log says it could not keep up and how much
    it took, not that it took nothing."""
    broker = start_broker(**{"nats.write_deadline": 3.0})
    slow = RawClient(broker.port, rcvbuf=4096)
    slow.handshake()
    slow.subscribe(b"feed")
    publisher = PacedPublisher(broker.port)
    publisher.start()
    taken = 0
    deadline = time.monotonic() + 60
    while not _lines_about(slow_consumer_log, slow) and time.monotonic() < deadline:
        taken += len(slow.sock.recv(4096))
        time.sleep(0.5)
    publisher.finish()
    assert slow.read_until_closed().endswith(b"-ERR 'Slow Consumer'\r\n")
    [line] = _lines_about(slow_consumer_log, slow)
    assert "could not keep up" in line, line
    took = re.search(r"it took (\d+) bytes", line)
    assert took, line
    # What its TCP acknowledged: what it read, and at most its receive buffer more.
    assert 0 < int(took.group(1)) <= taken + 65536, (line, taken)
    publisher.client.close()
    slow.close()


def test_a_reader_with_max_pending_waiting_is_cut_off_for_that(start_broker, slow_consumer_log):
    """With 256 KB allowed to wait, a subscriber that never reads is cut off
    once that much waits for it, and the log says so and what it took."""
    broker = start_broker(**{"nats.max_pending": 256 * 1024, "nats.write_deadline": 30.0})
    stalled = RawClient(broker.port, rcvbuf=4096)
    stalled.handshake()
    stalled.send(b"SUB feed 1\r\n")  # and never read again
    publisher = PacedPublisher(broker.port)
    publisher.start()
    assert _wait_for(lambda: _lines_about(slow_consumer_log, stalled)), slow_consumer_log
    publisher.finish()
    [line] = _lines_about(slow_consumer_log, stalled)
    took = re.search(r"more than 262144 bytes waiting; "
                     r"it took (\d+) bytes in the [\d.]+ s since its output backed up", line)
    assert took, line
    assert int(took.group(1)) <= 16384, line  # at most what its receive buffer had room for
    assert stalled.read_until_closed().endswith(b"-ERR 'Slow Consumer'\r\n")
    publisher.client.close()
    stalled.close()


def test_fan_in_loses_nothing(start_broker, slow_consumer_log):
    """Five publishers send 1,000 messages each at once towards one
    subscriber that reads slower than that, with only 1 MB allowed to wait
    for it (5 MB are sent): flow control holds the publishers back, and
    every message arrives, in each publisher's order. (Holds start at 256 KB
    waiting, and each publisher's read under way, up to 64 KB, still
    arrives after its hold.)"""
    broker = start_broker(**{"nats.max_pending": 1024 * 1024})
    subscriber = RawClient(broker.port, rcvbuf=16384)
    subscriber.handshake()
    subscriber.subscribe(b"fan")
    publishers, count = 5, 1000
    payloads = [[b"%d:%06d" % (p, i) + b"." * 1016 for i in range(count)] for p in range(publishers)]
    clients = [RawClient(broker.port, timeout=60.0) for _ in range(publishers)]
    for client in clients:
        client.handshake()
    senders = [threading.Thread(target=client.send, args=(b"".join(b"PUB fan 1024\r\n" + p + b"\r\n" for p in mine),))
               for client, mine in zip(clients, payloads)]
    for sender in senders:
        sender.start()
    frame = len(b"MSG fan 1 1024\r\n") + 1024 + 2
    received = b""
    while len(received) < publishers * count * frame:
        chunk = subscriber.sock.recv(16384)
        assert chunk, "the subscriber was cut off after %d messages" % (len(received) // frame)
        received += chunk
        time.sleep(0.0005)  # a reader slower than the publishers
    for sender in senders:
        sender.join()
    got = [received[i:i + frame] for i in range(0, len(received), frame)]
    assert all(f.startswith(b"MSG fan 1 1024\r\n") and f.endswith(b"\r\n") for f in got)
    by_publisher = [[f[16:16 + 1024] for f in got if f[16:17] == b"%d" % p] for p in range(publishers)]
    assert by_publisher == payloads
    for client in clients:
        client.send(b"PING\r\n")
        assert client.read_line() == b"PONG"
        client.close()
    assert not slow_consumer_log
    subscriber.close()
