"""TCP listening with writes that go out at once when nothing is queued.

Twisted's TCP transport never sends in ``write()``: it queues the bytes,
asks the reactor to watch the socket for writability, and sends on the next
reactor turn, then stops watching again (two epoll_ctl calls and a turn per
burst). A broker answers small frames one at a time (a reply, a PONG), and
that detour was about a fifth of a request-reply round trip.

``ImmediateWriteServer`` sends straight away with Twisted's own
``writeSomeData`` when its buffers are empty, which keeps the byte order,
and hands whatever the socket did not take to the normal buffered write, so
flow control, producers, TLS (whose writes go through the TLS layer
unchanged) and closing all work as in Twisted. ``ImmediateWriteEndpoint``
is a TCP server endpoint that listens with it, optionally with TLS from the
first byte (Twisted's TLSMemoryBIOFactory around the protocol factory).

The server also tells how far its peer is: ``peer_progress()`` gives the
bytes the peer's TCP has acknowledged and those still on their way to it,
which the slow-consumer rules of ``flowmq.connection`` go by.
"""

from __future__ import annotations

import struct

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

try:  # Linux: SIOCOUTQ (= TIOCOUTQ), a TCP socket's bytes not yet acknowledged by the peer
    from fcntl import ioctl
    from termios import TIOCOUTQ
except ImportError:  # Windows
    ioctl = None

_INT = struct.Struct("i")  # the C int the ioctl fills in


def _unacknowledged(sock) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged;
    0 where the system does not tell (then Twisted's sends are the measure)."""
    if ioctl is None:
        return 0
    try:
        return _INT.unpack(ioctl(sock.fileno(), TIOCOUTQ, bytes(_INT.size)))[0]
    except OSError:  # not Linux (ENOTTY), or the socket is closed
        return 0


class ImmediateWriteServer(tcp.Server):
    """A TCP server transport whose write() sends at once when nothing waits,
    and which counts what its socket took."""

    bytes_sent = 0  # bytes the socket took (the kernel's send queue), ever

    def write(self, data):
        # dataBuffer and _tempDataBuffer are FileDescriptor's two buffers;
        # both empty means no earlier bytes can still be on their way.
        if (self.connected and not self.TLS and not self.disconnecting and not self._writeDisconnected
                and not self.dataBuffer and not self._tempDataBuffer):
            sent = self.writeSomeData(data)
            if isinstance(sent, int):  # else the connection is lost: let Twisted find out
                if sent == len(data):
                    return
                data = data[sent:]
        tcp.Server.write(self, data)

    def writeSomeData(self, data):
        sent = tcp.Server.writeSomeData(self, data)
        if isinstance(sent, int):
            self.bytes_sent += sent
        return sent

    def peer_progress(self) -> tuple:
        """(taken, waiting): the bytes the peer's TCP has acknowledged so far,
        and the bytes still on their way to it (in Twisted's buffers and the
        socket's send queue). Counted on the wire: with TLS, encrypted bytes."""
        unacknowledged = _unacknowledged(self.socket)
        buffered = len(self.dataBuffer) - self.offset + self._tempDataLen
        return self.bytes_sent - unacknowledged, buffered + unacknowledged


class ImmediateWritePort(tcp.Port):
    transport = ImmediateWriteServer


@implementer(IStreamServerEndpoint)
class ImmediateWriteEndpoint:
    """Like TCP4ServerEndpoint/TCP6ServerEndpoint (the address decides), with
    ImmediateWriteServer transports."""

    def __init__(self, reactor, port: int, interface: str = "", backlog: int = 50, tls_options=None):
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog
        self.tls_options = tls_options

    def listen(self, factory):
        if self.tls_options is not None:  # TLS from the first byte
            factory = TLSMemoryBIOFactory(self.tls_options, False, factory)
        return defer.execute(self._listen, factory)

    def _listen(self, factory):
        port = ImmediateWritePort(self.port, factory, self.backlog, self.interface, self.reactor)
        port.startListening()
        return port
