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
"""

from __future__ import annotations

from twisted.internet import defer, tcp
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer


class ImmediateWriteServer(tcp.Server):
    """A TCP server transport whose write() sends at once when nothing waits."""

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
