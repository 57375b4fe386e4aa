"""Wire scripts: a protocol driven by bytes in, bytes out, without sockets.

DESIGN.md's protocol tests: the protocol's own factory builds a connection on
Twisted's ``StringTransport``; ``task.Clock`` is the reactor clock of the
broker and the connection, so timeouts (authentication, keepalive, slow
consumers) fire when a test advances it, never after a real sleep. The broker
is the real one (router, portal, permissions), not a mock; only its storage
engine is not started.

Any protocol reuses it: ``WireBroker(overrides).connect(Factory)`` gives a
``WireClient`` for a factory made by the protocol plugin of ``flowmq.tap``::

    wire = WireBroker({"auth.token": "s3cret"})
    client = wire.connect("nats")
    client.expect_line(startswith=b"INFO ")
    client.send(b"PING\\r\\n")
    assert client.take() == b"-ERR 'Authorization Violation'\\r\\n"
"""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone

from flowmq import config
from flowmq.core.broker import Broker
from flowmq.security import Security
from flowmq.tap import PROTOCOLS


class WireTransport(StringTransport):
    """A StringTransport that also says how much its client took, as
    ``flowmq.transport.ImmediateWriteServer.peer_progress`` does: the client
    takes the bytes a test reads with ``WireClient.take``."""

    def __init__(self, peer_port: int):
        StringTransport.__init__(self, peerAddress=IPv4Address("TCP", "10.0.0.1", peer_port))
        self.taken = 0
        self.aborted = False
        self.tls_options = None  # the options of startTLS, once the protocol asked for it

    def startTLS(self, options):
        """The in-band TLS upgrade: noted (the bytes stay clear text here; a
        test plays the handshake's end with ``protocol.handshakeCompleted()``)."""
        self.tls_options = options

    def peer_progress(self) -> tuple:
        written = len(self.io.getvalue())
        return self.taken, written

    def abortConnection(self):
        self.aborted = True
        StringTransport.abortConnection(self)


class WireClient:
    """One client connection: ``send`` bytes to the protocol, ``take`` what
    it wrote back since the last take."""

    def __init__(self, protocol, transport: WireTransport, clock: task.Clock):
        self.protocol = protocol
        self.transport = transport
        self.clock = clock
        self.lost = False
        protocol.makeConnection(transport)
        self.clock.advance(0)  # output queued outside a read goes out at the end of the reactor turn

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.clock.advance(0)

    def take(self) -> bytes:
        """What the protocol wrote since the last take (the client reads it)."""
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.taken += len(data)
        self.transport.clear()
        return data

    def take_line(self) -> bytes:
        """The next CRLF-terminated line, leaving the rest for the next take."""
        self.clock.advance(0)
        data = self.transport.value()
        line, separator, rest = data.partition(b"\r\n")
        assert separator, "no complete line in %r" % data
        self.transport.taken += len(line) + 2
        self.transport.clear()
        self.transport.io.write(rest)
        return line

    def advance(self, seconds: float, step: float = 0.1) -> None:
        """Let ``seconds`` pass on the clock in steps of at most ``step`` (as a
        running reactor would), ending a hair past the mark so that float
        rounding never leaves a timer due at that mark unfired."""
        target = self.clock.seconds() + seconds + 1e-9
        while self.clock.seconds() < target:
            self.clock.advance(min(step, target - self.clock.seconds()))

    def stop_reading(self) -> None:
        """The client's socket is full: Twisted pauses the protocol, its producer."""
        self.transport.producer.pauseProducing()

    def resume_reading(self) -> None:
        """The socket drained: Twisted resumes the protocol."""
        self.transport.producer.resumeProducing()

    def acknowledge(self, count: int) -> None:
        """The client's TCP acknowledged ``count`` more bytes (it takes data
        while its output stays backed up)."""
        self.transport.taken += count

    @property
    def closing(self) -> bool:
        """The protocol closed (or aborted) the connection."""
        return self.transport.disconnecting or self.transport.aborted

    def finish(self) -> None:
        """The connection is gone (the protocol hears it as Twisted would tell it)."""
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


class WireBroker:
    """A real broker and security (portal, TLS settings) on a ``task.Clock``."""

    def __init__(self, overrides=None, tmp_path=None):
        values = {"jetstream.enabled": False, "nats.host": "127.0.0.1", "nats.port": 0}
        if tmp_path is not None:
            values["broker.data_dir"] = str(tmp_path)
        values.update(overrides or {})
        self.settings = config.load(None, values)
        self.clock = task.Clock()
        self.broker = Broker(self.settings, self.clock)
        self.security = Security(self.settings)
        self.factories: dict = {}
        self.clients: list = []

    def factory(self, section: str):
        """The protocol factory of a plugin of ``flowmq.tap.PROTOCOLS``, by its config section."""
        if section not in self.factories:
            plugin = next(plugin for plugin in PROTOCOLS if plugin.section == section)
            self.factories[section] = plugin.listeners(self.broker, self.settings, self.clock, self.security)[0].factory
        return self.factories[section]

    def connect(self, section: str) -> WireClient:
        factory = self.factory(section)
        transport = WireTransport(40000 + len(self.clients))
        client = WireClient(factory.buildProtocol(transport.getPeer()), transport, self.clock)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.finish()
