"""The streaming decoder: bytes in, packets out (sans-IO: no Twisted, no broker).

``Decoder.feed(data)`` takes the next bytes from the wire and returns the
packets they complete, in order; bytes of an unfinished packet wait for the
next call. It frames packets (fixed header: type, flags, Remaining Length),
enforces the size limit and the order of a connection, and hands each body
to its reader in ``bodies.py``.

The side: ``Decoder(...)`` reads what a client sends to a server; its first
packet must be CONNECT (MQTT-3.1.0-1), whose protocol level then selects
3.1, 3.1.1 or 5.0 for every later packet, and a second CONNECT is a Protocol
Error (MQTT-3.1.0-2). ``Decoder.for_client(level)`` reads what a server sends
to a client at a known level (tests, test builders, a bridge): CONNACK first
(MQTT-3.2.0-1; a v5 server may send AUTH before it), once (MQTT-3.2.0-2).
Packets the other side sends (a CONNACK to a server, a SUBSCRIBE to a
client) are a Protocol Error; types 0 and, before MQTT 5, 15 are reserved
(Malformed Packet).

Limits: a packet (its fixed header included: the spec's "packet size", 5.0
§2.1.4) larger than the limit is refused with ``PacketTooLarge`` (0x95) as soon
as its Remaining Length has been read, before any of its body is buffered.
Until the CONNECT has been decoded the limit is ``max_connect_size`` (small:
an unauthenticated peer may make the server hold that much), then
``max_packet_size``. A Remaining Length of more than four bytes is a
Malformed Packet (5.0 §1.5.5), so no header is longer than five bytes.

Reserved flags: the fixed-header flags must be 0b0010 for PUBREL, SUBSCRIBE
and UNSUBSCRIBE and 0 for every other packet but PUBLISH (MQTT-2.1.3-1;
3.1.1 MQTT-2.2.2-1, -2.2.2-2), else Malformed. MQTT 3.1 gave every packet
DUP/QoS/RETAIN bits (a 3.1 client may retry a SUBSCRIBE with DUP set), so
at level 3 they are not checked outside CONNECT and PUBLISH.

Buffers and copies: the decoder scans each ``data`` in place; a payload is
sliced once out of it. A packet that spans calls is kept as the ``data``
objects that hold it (the first with the offset where the packet starts)
and put together when complete (``flowmq.buffers.joined``: one copy on
CPython, and on PyPy for two reads); for a PUBLISH whose header lies in
the first 4 KiB of its first read, that builds the payload itself. Empty
property blocks decode to the shared ``NO_PROPERTIES``.

Errors: one ``CodecError`` subclass per reason (``errors.py``), raised from
``feed()`` with ``packets`` holding the packets decoded before it in that
call. The decoder then stays failed: a later ``feed()`` raises the same
error again, as the connection is to be closed.
"""

from __future__ import annotations

from flowmq.buffers import joined

from .bodies import DECODERS, decode_connect
from .errors import CodecError, MalformedPacket, PacketTooLarge, ProtocolError
from .packets import (AUTH, CONNACK, CONNECT, DISCONNECT, MQTT_3_1, MQTT_5, NO_PROPERTIES, PINGREQ, PINGRESP,
                      PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK, SUBSCRIBE, TYPE_NAMES, UNSUBACK,
                      UNSUBSCRIBE)
from .primitives import MAX_VARINT, varint_at

#: The suggested limit before CONNECT: 64 KiB holds any sane CONNECT (will included).
DEFAULT_MAX_CONNECT_SIZE = 64 * 1024
#: The suggested limit after CONNECT; the protocol layer passes the broker's own.
DEFAULT_MAX_PACKET_SIZE = 1024 * 1024
#: The largest packet the protocol can frame: five header bytes and the largest Remaining Length.
MAX_PACKET_SIZE = 1 + 4 + MAX_VARINT

# How much of a held PUBLISH's first chunk is copied to read its header from
# (a topic name and properties longer than this take the slower path).
_HEADER_PREFIX = 4096

# The reserved fixed-header flags of each type but PUBLISH (MQTT-2.1.3-1).
_FLAGS = [0] * 16
_FLAGS[PUBREL] = _FLAGS[SUBSCRIBE] = _FLAGS[UNSUBSCRIBE] = 0x02

# What each side may receive once the connection is set up.
_FROM_CLIENTS = (PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH)
_FROM_SERVERS = (CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP, DISCONNECT, AUTH)


def _type_name(ptype: int) -> str:
    return TYPE_NAMES.get(ptype, "reserved type %d" % ptype)


class Decoder:
    """Incremental decoder for one connection's incoming bytes.

    ``Decoder(max_packet_size, max_connect_size)`` is a server's decoder of
    what its client sends; ``Decoder.for_client(level)`` (which passes
    ``client_level``) a client's decoder of what its server sends.
    """

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 max_connect_size: int = DEFAULT_MAX_CONNECT_SIZE, client_level=None):
        for size in (max_packet_size, max_connect_size):
            if not 2 <= size <= MAX_PACKET_SIZE:
                raise ValueError("packet size limit %r outside 2..%d" % (size, MAX_PACKET_SIZE))
        self.max_packet_size = max_packet_size
        self.max_connect_size = max_connect_size
        #: The protocol level (3, 4, 5): None on a server until CONNECT.
        self.level = None
        self._server_side = client_level is None  # it reads what a client sends
        self._table = [None] * 16  # type -> body reader; None: not accepted now
        self._parts = []  # the reads that hold an unfinished packet
        self._start_at = 0  # where in the first of them it starts
        self._held = 0  # its bytes in them
        self._need = 0  # the unfinished packet's whole size, 0 while its header is incomplete
        self._body = 0  # where its body starts (its header's length)
        self._error = None
        if self._server_side:
            self._first = (CONNECT,)  # what the first packet may be; None once it has come
            self._limit = max_connect_size
        else:
            self._start(client_level)
            self._first = (CONNACK, AUTH) if client_level == MQTT_5 else (CONNACK,)
            self._limit = max_packet_size

    @classmethod
    def for_client(cls, level: int, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> "Decoder":
        """A decoder of what a server sends to a client that connected at ``level``."""
        if level not in (3, 4, 5):
            raise ValueError("protocol level %r is not 3, 4 or 5" % (level,))
        return cls(max_packet_size, max_packet_size, client_level=level)

    def _start(self, level: int):
        """The connection's level is known: accept the packets of its side at that level."""
        self.level = level
        self._first = None
        for ptype in _FROM_CLIENTS if self._server_side else _FROM_SERVERS:
            if ptype != AUTH or level == MQTT_5:
                self._table[ptype] = DECODERS[ptype]
        if not self._server_side:
            self._table[CONNACK] = self._connack

    def _connack(self, first, buf, pos, end, level):
        packet = DECODERS[CONNACK](first, buf, pos, end, level)
        self._table[CONNACK] = None  # once (MQTT-3.2.0-2)
        self._first = None
        return packet

    def feed(self, data: bytes) -> list:
        """Take the next bytes from the wire (a bytes object); return the
        packets they complete."""
        if self._error is not None:
            self._error.packets = []
            raise self._error
        packets = []
        try:
            pos = 0
            if self._parts:
                pos = self._complete(data, packets)
                if pos < 0:
                    return packets
            self._scan(data, pos, packets)
        except CodecError as error:
            error.packets = packets
            self._error = error
            self._parts = []
            raise
        return packets

    def _scan(self, buf: bytes, pos: int, packets: list):
        end = len(buf)
        append = packets.append
        decode = self._decode
        while pos < end:
            first = buf[pos]
            if self._first is not None and first >> 4 not in self._first:
                raise self._not_first(first >> 4)
            if pos + 1 == end:
                break
            length = buf[pos + 1]
            if length < 0x80:
                body = pos + 2
            elif pos + 2 < end and buf[pos + 2] < 0x80:  # two bytes: up to 16 KB
                length = (length & 0x7F) | buf[pos + 2] << 7
                body = pos + 3
            else:
                found = varint_at(buf, pos + 1, end)
                if found is None:
                    break
                length, body = found
            stop = body + length
            if stop - pos > self._limit:
                raise self._too_large(stop - pos)
            if stop > end:
                self._parts, self._start_at = [buf], pos
                self._held = end - pos
                self._need = stop - pos
                self._body = body - pos
                return
            append(decode(first, buf, body, stop))
            pos = stop
        if pos < end:  # a fixed header cut short: at most four bytes
            self._parts, self._start_at = [buf[pos:]], 0
            self._held = end - pos
            self._need = 0

    def _complete(self, data: bytes, packets: list) -> int:
        """Add ``data`` to the unfinished packet; return where in ``data`` the
        packet ends once it is decoded, or -1 while it is still unfinished."""
        if not self._need:
            head = self._parts[0] + data[:4]
            found = varint_at(head, 1, len(head))
            if found is None:
                self._parts = [head]
                self._held = len(head)
                return -1
            length, body = found
            if body + length > self._limit:
                raise self._too_large(body + length)
            self._need = body + length
            self._body = body
        held = self._held + len(data)
        if held < self._need:
            self._parts.append(data)
            self._held = held
            return -1
        take = self._need - self._held
        parts = self._parts
        parts.append(data)
        self._parts = []
        packets.append(self._decode_parts(parts, self._start_at, take))
        return take

    def _decode_parts(self, parts: list, start: int, stop: int):
        """Decode a packet held in reads, from ``start`` in the first to
        ``stop`` in the last, copying its bytes once."""
        body = self._body
        first = parts[0][start]
        if first >> 4 == PUBLISH and len(parts[0]) - start > body:
            # Read the header from a short copy of the first read's part;
            # the payload is then put together from the reads. A header
            # longer than that fails here and is read again from the whole
            # packet below.
            head = parts[0][start:start + body + _HEADER_PREFIX]
            try:
                packet = self._decode(first, head, body, len(head))
            except CodecError:
                packet = None
            if packet is not None:
                packet.payload = joined(parts, start + len(head) - len(packet.payload), stop)
                return packet
        whole = joined(parts, start, stop)
        return self._decode(first, whole, body, len(whole))

    def _decode(self, first: int, buf, pos: int, end: int):
        ptype = first >> 4
        reader = self._table[ptype]
        if reader is None:
            if ptype == CONNECT and self._first is not None:
                return self._connect(first, buf, pos, end)
            raise self._unexpected(ptype)
        if first & 0x0F != _FLAGS[ptype] and ptype != PUBLISH and self.level != MQTT_3_1:
            raise MalformedPacket("%s with fixed-header flags 0x%X (MQTT-2.1.3-1)" % (_type_name(ptype), first & 0x0F))
        packet = reader(first, buf, pos, end, self.level)
        if ptype == PUBLISH and self._server_side and packet.properties is not NO_PROPERTIES \
                and "subscription_identifier" in packet.properties:
            raise ProtocolError("Subscription Identifier in a PUBLISH from a client (MQTT-3.3.4-6)")
        return packet

    def _connect(self, first: int, buf, pos: int, end: int):
        if first & 0x0F:
            raise MalformedPacket("CONNECT with fixed-header flags 0x%X (MQTT-2.1.3-1)" % (first & 0x0F))
        packet = decode_connect(buf, pos, end)
        self._start(packet.protocol_level)
        self._limit = self.max_packet_size
        return packet

    def _not_first(self, ptype: int) -> CodecError:
        if self._server_side:
            return ProtocolError("first packet is %s, not CONNECT (MQTT-3.1.0-1)" % _type_name(ptype))
        return ProtocolError("first packet is %s, not CONNACK (MQTT-3.2.0-1)" % _type_name(ptype))

    def _unexpected(self, ptype: int) -> CodecError:
        if ptype == 0:
            return MalformedPacket("packet type 0 is reserved (5.0 §2.1.2)")
        if ptype == AUTH and self.level != MQTT_5:
            return MalformedPacket("packet type 15 is reserved before MQTT 5 (3.1.1 §2.2.1)")
        if ptype == CONNECT and self._server_side:
            return ProtocolError("second CONNECT (MQTT-3.1.0-2)")
        if ptype == CONNACK and not self._server_side:
            return ProtocolError("second CONNACK (MQTT-3.2.0-2)")
        sender = "server" if self._server_side else "client"
        return ProtocolError("%s is not sent to a %s" % (_type_name(ptype), sender))

    def _too_large(self, size: int) -> CodecError:
        return PacketTooLarge("packet of %d bytes over the limit of %d" % (size, self._limit))
