"""flowmq.transport over real sockets: whatever mix of write() and
writeSequence() a protocol makes, and however little of it the socket
takes at a time, the peer reads exactly those bytes in that order, and a
close waits until they are all sent; a streaming producer is paused while
more than the transport's buffer size waits and resumed when it is sent.

The protocol writes everything at once into a server socket with a small
send buffer, towards a client with a small receive buffer, so that the
sends stop part-way through pieces and the rest waits in the transport's
buffers (the partial-write paths)."""

from __future__ import annotations

import random
import socket
import time

import cffi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface import implementer
from twisted.internet import protocol, reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import blockingCallFromThread

from conftest import _ensure_reactor
from flowmq.transport import IOV_MAX, READS_AT_ONCE, ImmediateWriteEndpoint

ffi = cffi.FFI()

#: One write of the protocol: ("write", size), ("buffer", size) (write_buffer
#: of memory the protocol reuses at once) or ("sequence", [sizes]).
writes = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 300000)),
        st.tuples(st.just("buffer"), st.integers(1, 300000)),
        st.tuples(st.just("sequence"), st.lists(st.integers(0, 200000), min_size=1, max_size=40)),
    ),
    min_size=1, max_size=8,
)


@implementer(IPushProducer)
class _Writer(protocol.Protocol):
    """Writes the factory's plan as soon as it is connected, as a streaming
    producer of its transport, and closes once the transport has resumed it
    (everything sent); the factory's ``calls`` records the pauses and resumes."""

    def connectionMade(self):
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        self.transport.registerProducer(self, True)
        for kind, data in self.factory.plan:
            if kind == "write":
                self.transport.write(data)
            elif kind == "buffer":
                memory = ffi.new("char[]", data)
                self.transport.write_buffer(ffi.buffer(memory, len(data)))
                ffi.memmove(memory, bytes(len(data)), len(data))  # reused: what waits must be a copy
            else:
                self.transport.writeSequence(data)
        if not self.factory.calls:  # the socket took it all
            self.resumeProducing()

    def pauseProducing(self):
        self.factory.calls.append("pause")

    def resumeProducing(self):
        self.factory.calls.append("resume")
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def stopProducing(self):
        pass


@pytest.fixture
def listen():
    """``listen(plan)``: a port whose connections write ``plan``; closed at the end."""
    _ensure_reactor()
    ports = []

    def start(plan):
        factory = protocol.Factory.forProtocol(_Writer)
        factory.plan = plan
        factory.calls = []
        endpoint = ImmediateWriteEndpoint(reactor, 0, "127.0.0.1")
        port = blockingCallFromThread(reactor, endpoint.listen, factory)
        ports.append(port)
        return port.getHost().port, factory.calls

    yield start
    for port in ports:
        blockingCallFromThread(reactor, port.stopListening)


def _read_all(port: int) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        sock.close()


def _check(listen, plan) -> None:
    expected = b"".join(b"".join(data) if kind == "sequence" else data for kind, data in plan)
    port, calls = listen(plan)
    assert _read_all(port) == expected
    # Resumed once, when everything was sent; paused before (by each write
    # while full) when much more than the buffer size (64 KiB) had to wait.
    assert calls[-1:] == ["resume"] and calls.count("resume") == 1
    if len(expected) > 300000:
        assert "pause" in calls


def test_the_peer_reads_every_byte_in_order_however_the_sends_are_cut(listen):
    @settings(max_examples=30)
    @given(shape=writes, seed=st.integers(0, 1 << 30))
    def check(shape, seed):
        rng = random.Random(seed)
        plan = []
        for kind, sizes in shape:
            if kind != "sequence":
                plan.append((kind, rng.randbytes(sizes)))
            else:
                plan.append((kind, [rng.randbytes(size) for size in sizes]))
        _check(listen, plan)

    check()


def test_a_sequence_of_more_pieces_than_one_sendmsg_takes(listen):
    pieces = [b"%d," % index for index in range(3 * IOV_MAX)] + [bytes(200000)] + [b"end"]
    _check(listen, [("sequence", pieces), ("write", b"after")])


# --- reads: several in a row when the socket has more ------------------------------


class _Reader(protocol.Protocol):
    """Records its reads, bracket by bracket (``reads_begin``/``reads_end``);
    ``read_more`` answers what the factory says. It starts paused, so that
    the client's bytes wait in the socket until the test resumes it."""

    def connectionMade(self):
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.transport.pauseProducing()
        self.factory.connections.append(self)

    def reads_begin(self):
        self.factory.brackets.append([])

    def reads_end(self):
        self.factory.brackets[-1].append("end")

    def read_more(self):
        return self.factory.more

    def dataReceived(self, data):
        self.factory.brackets[-1].append(len(data))
        self.factory.received.append(data)
        if self.factory.pause_after is not None and sum(map(len, self.factory.received)) >= self.factory.pause_after:
            self.factory.pause_after = None
            self.transport.pauseProducing()
            reactor.callLater(0.2, self.transport.resumeProducing)


def _until(condition) -> None:
    """Wait (up to 10 s) until ``condition()``, checked in the reactor's thread."""
    for _ in range(1000):
        if blockingCallFromThread(reactor, condition):
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.parametrize("more, pause_after", [(True, None), (False, None), (True, 65536)],
                         ids=["read-on", "one-read", "paused-within"])
def test_a_socket_with_more_is_read_on_while_the_protocol_asks_and_reads(more, pause_after):
    """Six buffers' worth waits in the socket: the transport reads on
    (within one bracket, up to READS_AT_ONCE reads) only while the protocol
    asks for more and has not stopped reading; every byte arrives in order."""
    _ensure_reactor()
    factory = protocol.Factory.forProtocol(_Reader)
    factory.connections, factory.brackets, factory.received = [], [], []
    factory.more, factory.pause_after = more, pause_after
    port = blockingCallFromThread(reactor, ImmediateWriteEndpoint(reactor, 0, "127.0.0.1").listen, factory)
    sent = random.Random(7).randbytes(6 * 65536 + 100)
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=20)
    try:
        client.sendall(sent)  # into the server's socket, which its paused protocol does not read
        _until(lambda: factory.connections)
        blockingCallFromThread(reactor, factory.connections[0].transport.resumeProducing)
        _until(lambda: sum(map(len, factory.received)) == len(sent))
        assert b"".join(factory.received) == sent
        assert all(bracket[-1:] == ["end"] for bracket in factory.brackets)  # each bracket closed
        reads = [bracket[:-1] for bracket in factory.brackets]
        assert max(map(len, reads)) <= READS_AT_ONCE
        if not more:
            assert all(len(bracket) == 1 for bracket in reads)
        elif pause_after is None:
            assert reads[0][:2] == [65536, 65536]  # read on after a full buffer
        else:
            assert reads[0] == [65536]  # the protocol stopped reading: no more in this bracket
            assert max(map(len, reads)) > 1  # and it read on once resumed
    finally:
        client.close()
        blockingCallFromThread(reactor, port.stopListening)
