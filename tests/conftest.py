"""Shared fixtures: a real broker listening on an ephemeral loopback port.

The Twisted reactor runs in a background thread for the whole test session;
each test that asks for ``broker`` gets its own BrokerService (own settings,
own port) started and stopped through ``blockingCallFromThread``, and talks
to it over real sockets: with nats-py (asyncio, in the test's thread) or
with raw bytes. ``wire`` makes wire-script brokers instead (tests/wire.py):
no socket, no reactor thread, time on a task.Clock.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, settings
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from flowmq import config
from flowmq.tap import build_service
from processes import Twistd
from wire import WireBroker

# No per-example time limit for hypothesis: a loaded CI machine (and PyPy
# warming up) makes any deadline flaky; tests that need one set their own.
settings.register_profile("flowmq", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("flowmq")

_reactor_thread = None


def _ensure_reactor():
    global _reactor_thread
    if _reactor_thread is None:
        _reactor_thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        _reactor_thread.start()
        while not reactor.running:
            time.sleep(0.01)


class RunningBroker:
    """A broker started in the reactor thread; ``url`` is its NATS address."""

    def __init__(self, settings):
        self.settings = settings
        self.service = blockingCallFromThread(reactor, self._start)
        self.port = self.service.listeners["NATS"].port.getHost().port
        self.url = "nats://127.0.0.1:%d" % self.port
        mqtt = self.service.listeners.get("MQTT")
        #: The MQTT listener's port (None when mqtt.enabled is false).
        self.mqtt_port = mqtt.port.getHost().port if mqtt is not None else None

    def _start(self):
        service = build_service(self.settings, reactor)
        service.privilegedStartService()
        service.startService()
        return service

    def call(self, function, *args):
        """Run ``function(*args)`` in the reactor thread and return its result."""
        return blockingCallFromThread(reactor, function, *args)

    def stop(self):
        if self.service.running:
            self.call(self.service.stopService)


def made_by(make, finish):
    """The body of a fixture that hands out a maker: yields a function that
    calls ``make`` and keeps what it made, then ``finish``es each of them
    (``yield from made_by(...)``)."""
    made = []

    def build(*args, **kwargs):
        thing = make(*args, **kwargs)
        made.append(thing)
        return thing

    yield build
    for thing in made:
        finish(thing)


@pytest.fixture
def start_broker(tmp_path):
    """Start a broker with setting overrides: ``start_broker(**{"nats.max_payload": 1024})``."""
    _ensure_reactor()

    def start(**overrides):
        values = {"nats.host": "127.0.0.1", "nats.port": 0, "mqtt.host": "127.0.0.1", "mqtt.port": 0,
                  "broker.data_dir": str(tmp_path / "data")}
        values.update(overrides)
        return RunningBroker(config.load(None, values))

    yield from made_by(start, RunningBroker.stop)


@pytest.fixture
def wire(tmp_path):
    """Make a WireBroker (tests/wire.py: a protocol on StringTransport and
    task.Clock) with setting overrides: ``wire(**{"auth.token": "s"})``."""
    yield from made_by(lambda **overrides: WireBroker(overrides, tmp_path), WireBroker.close)


@pytest.fixture
def broker(start_broker):
    return start_broker()


def run(coroutine, timeout=30):
    """Run an asyncio coroutine (a nats-py scenario) to completion."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def flushed(nc):
    """Return once the server has all that the nats-py client ``nc`` sent before this call."""
    # One flush() does not: nats-py 2.16's _send_ping writes the PING to the
    # socket at once, ahead of commands still queued for its flusher task
    # (a SUB just made), so the PONG may come before the server has the SUB.
    # That flush wakes the flusher, which writes them before the PONG is
    # read: the second PING goes after them.
    await nc.flush()
    await nc.flush()


class RawClient:
    """A NATS client made of a plain socket, for byte-exact scenarios."""

    def __init__(self, port, timeout=5.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server; unread: %r" % self.buffer)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            self.buffer += chunk
        data, self.buffer = self.buffer, b""
        return data

    def handshake(self, connect=b'{"verbose":false,"pedantic":false,"headers":true,"no_responders":true}'):
        """Read INFO, send CONNECT (by default with the options nats-py sends) and
        a PING, wait for the PONG."""
        info = self.read_line()
        assert info.startswith(b"INFO ")
        self.send(b"CONNECT " + connect + b"\r\nPING\r\n")
        assert self.read_line() == b"PONG"
        return info

    def subscribe(self, subject: bytes, sid: bytes = b"1"):
        """SUB, then a PING round trip so that the subscription is in place."""
        self.send(b"SUB %s %s\r\nPING\r\n" % (subject, sid))
        assert self.read_line() == b"PONG"

    def close(self):
        self.sock.close()


@pytest.fixture
def raw_client(broker):
    yield from made_by(lambda port=None, **kwargs: RawClient(port or broker.port, **kwargs), RawClient.close)


@pytest.fixture
def twistd(tmp_path):
    """Start ``twistd -n flowmq`` processes; any still running at the end are killed."""
    started = []

    def start(data_dir, name, *options, preexec_fn=None):
        broker = Twistd(tmp_path, data_dir, name, *options, preexec_fn=preexec_fn)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        if broker.process.poll() is None:
            broker.process.kill()
            broker.process.wait(30)
