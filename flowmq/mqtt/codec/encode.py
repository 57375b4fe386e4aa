"""Writing packets: ``encode(packet, level)`` for every control packet, both
directions, and ``encode_publish`` for the broker's outgoing PUBLISH
(``publish_head`` for one whose payload goes as a piece of its own).

``level`` chooses the format (3, 4 or 5). At 3 and 4 the MQTT 5 fields are
not written: properties, and the reason codes of acknowledgements, UNSUBACK
and DISCONNECT (the protocol layer decides what a 3.1.1 peer gets). A
CONNECT writes its own ``protocol_level`` as its level byte (so a test can
ask for level 6) in the format of ``level``.

The spec's short forms are used wherever they apply: an acknowledgement
with reason 0x00 and no properties has a Remaining Length of 2, one with a
reason code and no properties 3 (5.0 §3.4.2.1, §3.4.2.2.1); a DISCONNECT or
AUTH with 0x00 and no properties 0, with a reason and no properties 1
(5.0 §3.14.2.1, §3.15.2.1). The decoder reads them all back unchanged.

Values outside their field (a packet identifier past 65,535, a string over
65,535 bytes, a packet over 268,435,455 bytes) raise ``struct.error`` or
ValueError: they are the caller's bugs, not a peer's.
"""

from __future__ import annotations

import struct

from .packets import (AUTH, CONNACK, CONNECT, DISCONNECT, MQTT_5, PINGREQ, PINGRESP, PROTOCOL_NAMES, PUBACK,
                      PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE)
from .primitives import U16, encode_binary, encode_string, encode_varint
from .properties import WILL_PROPERTIES, encode_properties

_HEAD = struct.Struct(">BBH")  # first byte, a one-byte Remaining Length, the topic length
_HEAD2 = struct.Struct(">BBBH")  # the same with a two-byte Remaining Length
_PINGREQ = b"\xc0\x00"
_PINGRESP = b"\xd0\x00"


def encode_publish(topic: bytes, payload: bytes, qos: int = 0, retain: bool = False, dup: bool = False,
                   packet_id=None, properties: bytes = b"") -> bytes:
    """A PUBLISH from its parts, for the broker's fan-out.

    ``topic`` is the topic name already encoded in UTF-8, ``properties`` the
    whole property block as ``encode_properties`` or ``property_block``
    write it (length prefix included: ``b"\\x00"`` for an MQTT 5 PUBLISH
    without properties) or ``b""`` for 3.1/3.1.1, so a message sent to many
    subscribers encodes its properties once. ``packet_id`` is needed for
    QoS 1 and 2 only.
    """
    return publish_head(topic, len(payload), qos, retain, dup, packet_id, properties) + payload


def publish_head(topic: bytes, size: int, qos: int = 0, retain: bool = False, dup: bool = False,
                 packet_id=None, properties: bytes = b"") -> bytes:
    """A PUBLISH up to its ``size``-byte payload (``encode_publish``'s
    arguments), for a payload that is sent as a piece of its own."""
    length = 2 + len(topic) + len(properties) + size
    first = 0x30 | qos << 1
    if retain:
        first |= 0x01
    if dup:
        first |= 0x08
    if qos:
        length += 2
    if length < 0x80:
        head = _HEAD.pack(first, length, len(topic))
    elif length < 0x4000:  # a two-byte Remaining Length (5.0 §1.5.5): payloads up to 16 KB
        head = _HEAD2.pack(first, length & 0x7F | 0x80, length >> 7, len(topic))
    else:
        head = _long_head(first, length, len(topic))
    if qos:
        return b"".join((head, topic, U16.pack(packet_id), properties))
    return b"".join((head, topic, properties))


def _long_head(first: int, length: int, topic_length: int) -> bytes:
    return bytes((first,)) + encode_varint(length) + U16.pack(topic_length)


def _packet(first: int, parts: list) -> bytes:
    """The fixed header, then the parts, in one join."""
    return b"".join([bytes((first,)), encode_varint(sum(map(len, parts)))] + parts)


def _connect(packet, level: int) -> bytes:
    will = packet.will
    flags = 0x02 if packet.clean_start else 0
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
    if packet.password is not None:
        flags |= 0x40
    if packet.username is not None:
        flags |= 0x80
    parts = [encode_string(PROTOCOL_NAMES.get(level, "MQTT")), bytes((packet.protocol_level, flags)),
             U16.pack(packet.keep_alive)]
    if level == MQTT_5:
        parts.append(encode_properties(packet.properties, CONNECT))
    parts.append(encode_string(packet.client_id))
    if will is not None:
        if level == MQTT_5:
            parts.append(encode_properties(will.properties, WILL_PROPERTIES))
        parts.append(encode_string(will.topic))
        parts.append(encode_binary(will.payload))
    if packet.username is not None:
        parts.append(encode_string(packet.username))
    if packet.password is not None:
        parts.append(encode_binary(packet.password))
    return _packet(CONNECT << 4, parts)


def _connack(packet, level: int) -> bytes:
    flags = 1 if packet.session_present and level != 3 else 0  # 3.1's first byte is reserved
    parts = [bytes((flags, packet.reason_code))]
    if level == MQTT_5:
        parts.append(encode_properties(packet.properties, CONNACK))
    return _packet(CONNACK << 4, parts)


def _publish(packet, level: int) -> bytes:
    properties = encode_properties(packet.properties, PUBLISH) if level == MQTT_5 else b""
    return encode_publish(packet.topic.encode("utf-8"), packet.payload, packet.qos, packet.retain, packet.dup,
                          packet.packet_id, properties)


def _ack(packet, level: int) -> bytes:
    ptype = packet.TYPE
    first = ptype << 4 | (0x02 if ptype == PUBREL else 0)
    if level != MQTT_5 or not (packet.reason_code or packet.properties):
        return bytes((first, 2)) + U16.pack(packet.packet_id)
    parts = [U16.pack(packet.packet_id), bytes((packet.reason_code,))]
    if packet.properties:
        parts.append(encode_properties(packet.properties, ptype))
    return _packet(first, parts)


def _subscribe(packet, level: int) -> bytes:
    parts = [U16.pack(packet.packet_id)]
    if level == MQTT_5:
        parts.append(encode_properties(packet.properties, SUBSCRIBE))
    for topic_filter, options in packet.subscriptions:
        byte = options.qos
        if level == MQTT_5:
            byte |= options.no_local << 2 | options.retain_as_published << 3 | options.retain_handling << 4
        parts.append(encode_string(topic_filter) + bytes((byte,)))
    return _packet(SUBSCRIBE << 4 | 0x02, parts)


def _suback(packet, level: int) -> bytes:
    parts = [U16.pack(packet.packet_id)]
    if level == MQTT_5:
        parts.append(encode_properties(packet.properties, SUBACK))
    parts.append(bytes(packet.reason_codes))
    return _packet(SUBACK << 4, parts)


def _unsubscribe(packet, level: int) -> bytes:
    parts = [U16.pack(packet.packet_id)]
    if level == MQTT_5:
        parts.append(encode_properties(packet.properties, UNSUBSCRIBE))
    parts.extend(encode_string(topic_filter) for topic_filter in packet.topic_filters)
    return _packet(UNSUBSCRIBE << 4 | 0x02, parts)


def _unsuback(packet, level: int) -> bytes:
    parts = [U16.pack(packet.packet_id)]
    if level == MQTT_5:
        parts.append(encode_properties(packet.properties, UNSUBACK))
        parts.append(bytes(packet.reason_codes))
    return _packet(UNSUBACK << 4, parts)


def _reason_and_properties(packet, level: int) -> bytes:
    ptype = packet.TYPE
    if level != MQTT_5 or not (packet.reason_code or packet.properties):
        return bytes((ptype << 4, 0))
    if not packet.properties:
        return bytes((ptype << 4, 1, packet.reason_code))
    return _packet(ptype << 4, [bytes((packet.reason_code,)), encode_properties(packet.properties, ptype)])


def _pingreq(packet, level: int) -> bytes:
    return _PINGREQ


def _pingresp(packet, level: int) -> bytes:
    return _PINGRESP


def _auth(packet, level: int) -> bytes:
    if level != MQTT_5:
        raise ValueError("AUTH exists in MQTT 5 only")
    return _reason_and_properties(packet, level)


_ENCODERS = {
    CONNECT: _connect,
    CONNACK: _connack,
    PUBLISH: _publish,
    PUBACK: _ack,
    PUBREC: _ack,
    PUBREL: _ack,
    PUBCOMP: _ack,
    SUBSCRIBE: _subscribe,
    SUBACK: _suback,
    UNSUBSCRIBE: _unsubscribe,
    UNSUBACK: _unsuback,
    PINGREQ: _pingreq,
    PINGRESP: _pingresp,
    DISCONNECT: _reason_and_properties,
    AUTH: _auth,
}


def encode(packet, level: int) -> bytes:
    """The wire bytes of ``packet`` for a connection at protocol level ``level``."""
    return _ENCODERS[packet.TYPE](packet, level)
