"""TCP listening with writes that go out at once when nothing is queued.

Twisted's TCP transport never sends in ``write()``: it queues the bytes,
asks the reactor to watch the socket for writability, and sends on the next
reactor turn, then stops watching again (two epoll_ctl calls and a turn per
burst). A broker answers small frames one at a time (a reply, a PONG), and
that detour was about a fifth of a request-reply round trip.

``ImmediateWriteServer`` sends straight away with Twisted's own
``writeSomeData`` when its buffers are empty, which keeps the byte order,
and buffers whatever the socket did not take, so flow control, producers,
TLS (whose writes go through the TLS layer unchanged) and closing all work
as in Twisted. ``ImmediateWriteEndpoint`` is a TCP server endpoint that
listens with it, optionally with TLS from the first byte (Twisted's
TLSMemoryBIOFactory around the protocol factory).

Frames that carry a large payload are queued as a sequence (header,
payload, trailer: the payload is the message's own bytes object, shared by
every subscriber), and the server sends a sequence with one ``sendmsg``
(scatter/gather I/O, as writev in a C broker): the kernel copies each piece
straight from where it lies, and nothing joins them first. What the socket
does not take waits as pieces (bytes objects, as Twisted's buffers hold):
``doWrite`` sends them with ``sendmsg`` too, instead of Twisted's join of
its buffer, the partly sent one from its offset, never copied; once all is
sent it hands over to Twisted's own ``doWrite``, whose rules for an emptied
buffer (resume the producer, finish a close) apply unchanged.

A readable socket that has more than one read's worth gets up to
``READS_AT_ONCE`` reads in a row, while the protocol asks for more
(``read_more()``) and brackets them as one (``reads_begin()`` and
``reads_end()``, ``flowmq.connection``): the deliveries of several reads
then share their writes where each read alone makes small ones (a queue
group deals each read out to its members). A protocol without these hooks
(TLS wraps ours) reads once, as Twisted does.

On PyPy a protocol that has ``wants_read_buffer`` (NATS) is read into the
process's reused read buffer (``recv_into``, flowmq.rawbytes) and told the
size (``read_buffer_received``) whenever it wants it, and ``write_buffer``
sends from a reused output buffer, copying only what the socket does not
take.

The server also tells how far its peer is: ``peer_progress()`` gives the
bytes the peer's TCP has acknowledged and those still on their way to it,
which the slow-consumer rules of ``flowmq.connection`` go by.
"""

from __future__ import annotations

import os
import socket
import struct
from errno import EINTR, ENOBUFS, EWOULDBLOCK

from twisted.internet import defer, main, tcp
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from flowmq import rawbytes

try:  # Linux: SIOCOUTQ (= TIOCOUTQ), a TCP socket's bytes not yet acknowledged by the peer
    from fcntl import ioctl
    from termios import TIOCOUTQ
except ImportError:  # Windows
    ioctl = None

_INT = struct.Struct("i")  # the C int the ioctl fills in

#: The most reads one readable event takes from a socket that has more.
READS_AT_ONCE = 4

#: Scatter/gather sends where the platform has them (not Windows).
_GATHER = hasattr(socket.socket, "sendmsg")
try:  # the most pieces one sendmsg takes (POSIX IOV_MAX; Linux: 1024)
    IOV_MAX = os.sysconf("SC_IOV_MAX")
except (AttributeError, ValueError, OSError):
    IOV_MAX = 16  # POSIX's minimum


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
    which sends sequences of pieces with sendmsg, and which counts what its
    socket took."""

    bytes_sent = 0  # bytes the socket took (the kernel's send queue), ever
    _reading = False  # the reactor watches the socket for input

    def startReading(self):
        self._reading = True
        tcp.Server.startReading(self)

    def stopReading(self):
        self._reading = False
        tcp.Server.stopReading(self)

    def doRead(self):
        """Read, and read on (up to READS_AT_ONCE reads) while each read
        filled the buffer, the connection still reads and the protocol
        asks for more, all within the protocol's reads_begin/reads_end."""
        protocol = self.protocol
        read_more = getattr(protocol, "read_more", None)
        if read_more is None:
            return tcp.Server.doRead(self)
        wants_buffer = getattr(protocol, "wants_read_buffer", None) if rawbytes.ENABLED else None
        protocol.reads_begin()
        try:
            for _ in range(READS_AT_ONCE):
                # A TLS layer that came in between (startTLS) takes the bytes.
                into_buffer = wants_buffer is not None and self.protocol is protocol and wants_buffer()
                try:
                    if into_buffer:
                        size = self.socket.recv_into(rawbytes.READ_VIEW)
                    else:
                        data = self.socket.recv(self.bufferSize)
                        size = len(data)
                except OSError as error:
                    if error.args[0] == EWOULDBLOCK:
                        return None
                    return main.CONNECTION_LOST
                if not into_buffer:
                    result = self._dataReceived(data)
                elif size:
                    result = protocol.read_buffer_received(size)
                else:
                    return main.CONNECTION_DONE  # what Twisted's _dataReceived answers to an empty read
                if (result is not None or size < self.bufferSize or not self._reading or self.disconnecting
                        or not read_more()):
                    return result
            return None
        finally:
            protocol.reads_end()

    def _idle(self) -> bool:
        """Nothing is buffered, so a send now keeps the byte order; and the
        connection can take it (TLS writes go through the TLS layer)."""
        # dataBuffer and _tempDataBuffer are FileDescriptor's two buffers.
        return (self.connected and not self.TLS and not self.disconnecting and not self._writeDisconnected
                and not self.dataBuffer and not self._tempDataBuffer)

    def write(self, data):
        if self._idle():
            sent = self.writeSomeData(data)
            if isinstance(sent, int):  # else the connection is lost: let Twisted find out
                if sent < len(data):
                    self._keep(data, sent, ())
                return
        tcp.Server.write(self, data)

    def sends_now(self) -> bool:
        """A write now goes straight to the socket (see ``write``)."""
        return self._idle()

    def write_buffer(self, view) -> None:
        """``write`` for a view of memory that its owner reuses once this
        returns (a flowmq.rawbytes.OutputBuffer): what the socket does not
        take at once is copied."""
        if self._idle():
            sent = self.writeSomeData(view)
            if isinstance(sent, int):
                if sent < len(view):
                    self._keep(view[sent:], 0, ())
                return
        tcp.Server.write(self, view[:])

    def writeSequence(self, pieces):
        """Send ``pieces`` (bytes) in order, with one sendmsg when nothing waits."""
        if _GATHER and self._idle() and len(pieces) > 1:
            batch = pieces[:IOV_MAX]
            sent = self._send_gathered(batch)
            if isinstance(sent, int):
                index, offset = _advance(batch, sent)
                if index < len(pieces):
                    self._keep(pieces[index], offset, pieces[index + 1:])
                return
        tcp.Server.writeSequence(self, pieces)

    def _keep(self, piece: bytes, offset: int, rest) -> None:
        """Buffer what the socket did not take: ``piece`` from ``offset`` on
        (kept whole, sent from its offset: no copy), then ``rest``."""
        self.dataBuffer, self.offset = piece, offset
        if rest:
            tcp.Server.writeSequence(self, rest)  # pauses the producer if full, watches for writability
        else:
            self._maybePauseProducer()
            self.startWriting()

    def doWrite(self):
        """The socket can take more: send what is buffered, gathered, from
        the offset of the partly sent piece; Twisted's own doWrite once
        everything is sent (with nothing to send, it applies its rules for
        an emptied buffer: resume the producer, finish a close)."""
        head, offset = self.dataBuffer, self.offset
        pieces = self._tempDataBuffer
        if _GATHER and (pieces or offset < len(head)):
            batch = ([memoryview(head)[offset:]] if offset < len(head) else []) + pieces[:IOV_MAX - 1]
            sent = self._send_gathered(batch)
            if not isinstance(sent, int):
                return sent
            self._consume(sent)
            if self._tempDataBuffer or self.offset < len(self.dataBuffer):
                return None  # more than the socket took: the reactor calls again when it can take more
        return tcp.Server.doWrite(self)

    def _isSendBufferFull(self):
        # Twisted counts all of dataBuffer; a partly sent piece is kept
        # whole there, so count only what is still to be sent.
        return len(self.dataBuffer) - self.offset + self._tempDataLen > self.bufferSize

    def _consume(self, sent: int) -> None:
        """Drop ``sent`` bytes from the front of the buffers."""
        left = len(self.dataBuffer) - self.offset
        if sent < left:
            self.offset += sent
            return
        sent -= left
        pieces = self._tempDataBuffer
        index, offset = _advance(pieces, sent)
        if index < len(pieces):
            self.dataBuffer, self.offset = pieces[index], offset
            self._tempDataLen -= sent + len(pieces[index]) - offset
            del pieces[:index + 1]
        else:
            self.dataBuffer, self.offset = b"", 0
            self._tempDataLen = 0
            del pieces[:]

    def _send_gathered(self, pieces):
        """One sendmsg of ``pieces``: the bytes the socket took, or
        CONNECTION_LOST (as Twisted's writeSomeData answers)."""
        while True:
            try:
                sent = self.socket.sendmsg(pieces)
            except OSError as error:
                if error.args[0] == EINTR:
                    continue
                if error.args[0] in (EWOULDBLOCK, ENOBUFS):
                    return 0
                return main.CONNECTION_LOST
            self.bytes_sent += sent
            return sent

    def writeSomeData(self, data):
        if not data:  # Twisted's doWrite on an emptied buffer: nothing to send, no system call
            return 0
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


def _advance(pieces, count: int) -> tuple:
    """``(index, offset)`` where the first ``count`` bytes of ``pieces``
    end: the first piece not wholly sent, and how much of it was."""
    for index in range(len(pieces)):
        size = len(pieces[index])
        if count < size:
            return index, count
        count -= size
    return len(pieces), 0


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
