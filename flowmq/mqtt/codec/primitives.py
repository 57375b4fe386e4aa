"""The MQTT data types (5.0 §1.5; 3.1.1 §1.5): reading with the spec's checks, and writing.

Readers take ``(buf, pos, end)`` with ``buf`` a bytes object and return
``(value, next_pos)``; ``end`` is where the enclosing structure ends (the
packet, or a property block), and a field that would run past it is a
Malformed Packet.

UTF-8 Encoded Strings (5.0 §1.5.4, 3.1.1 §1.5.3) are decoded strictly: ill-formed
UTF-8, overlong forms and the surrogates U+D800..U+DFFF (MQTT-1.5.4-1; Python's
strict codec rejects all three) and U+0000 (MQTT-1.5.4-2) are a Malformed
Packet. The "Disallowed Unicode code points" (controls, non-characters) that
the spec says a receiver MAY reject are accepted: they are legal UTF-8 and
rejecting them is a policy (5.0 §5.4.9) left to the protocol layer. A BOM
(U+FEFF) is kept as it is (MQTT-1.5.4-3).
"""

from __future__ import annotations

import struct

from .errors import MalformedPacket

U16 = struct.Struct(">H")
U32 = struct.Struct(">I")

#: The largest Variable Byte Integer: four bytes of seven bits (5.0 §1.5.5).
MAX_VARINT = 268435455

_BYTES = [bytes((i,)) for i in range(256)]


def varint_at(buf, pos: int, end: int):
    """Read a Variable Byte Integer; None when ``end`` comes before its last byte.

    A fifth byte (the fourth with its continuation bit set) is a Malformed
    Packet (5.0 §1.5.5: "The maximum number of bytes ... is four"). A
    non-minimal encoding (MQTT-1.5.5-1 binds the sender) is accepted.
    """
    value = 0
    shift = 0
    for index in range(pos, min(pos + 4, end)):
        byte = buf[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    if end - pos >= 4:
        raise MalformedPacket("variable byte integer longer than four bytes (5.0 §1.5.5)")
    return None


def read_varint(buf, pos: int, end: int):
    """Read a Variable Byte Integer that must lie before ``end``."""
    if pos < end and buf[pos] < 0x80:
        return buf[pos], pos + 1
    found = varint_at(buf, pos, end)
    if found is None:
        raise MalformedPacket("truncated variable byte integer")
    return found


def read_byte(buf, pos: int, end: int):
    if pos >= end:
        raise MalformedPacket("truncated byte field")
    return buf[pos], pos + 1


def read_u16(buf, pos: int, end: int):
    """A Two Byte Integer (5.0 §1.5.2)."""
    if pos + 2 > end:
        raise MalformedPacket("truncated two byte integer")
    return U16.unpack_from(buf, pos)[0], pos + 2


def read_u32(buf, pos: int, end: int):
    """A Four Byte Integer (5.0 §1.5.3)."""
    if pos + 4 > end:
        raise MalformedPacket("truncated four byte integer")
    return U32.unpack_from(buf, pos)[0], pos + 4


def _field_end(buf, pos: int, end: int) -> int:
    """Where a field with a Two Byte length prefix at ``pos`` ends."""
    if pos + 2 > end:
        raise MalformedPacket("truncated length prefix")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("length-prefixed field runs past its packet")
    return stop


def utf8(raw) -> str:
    """Decode the bytes of a UTF-8 Encoded String with the spec's checks."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("ill-formed UTF-8 string (MQTT-1.5.4-1)") from None
    if "\x00" in text:
        raise MalformedPacket("U+0000 in a UTF-8 string (MQTT-1.5.4-2)")
    return text


def read_string(buf, pos: int, end: int):
    """A UTF-8 Encoded String (5.0 §1.5.4): Two Byte length, then the bytes."""
    stop = _field_end(buf, pos, end)
    return utf8(buf[pos + 2:stop]), stop


def read_binary(buf, pos: int, end: int):
    """Binary Data (5.0 §1.5.6): Two Byte length, then the bytes."""
    stop = _field_end(buf, pos, end)
    return buf[pos + 2:stop], stop


def read_string_pair(buf, pos: int, end: int):
    """A UTF-8 String Pair (5.0 §1.5.7), as a (name, value) tuple."""
    name, pos = read_string(buf, pos, end)
    value, pos = read_string(buf, pos, end)
    return (name, value), pos


def encode_varint(value: int) -> bytes:
    """Write a Variable Byte Integer in its minimal form (MQTT-1.5.5-1)."""
    if 0 <= value < 0x80:
        return _BYTES[value]
    if not 0 <= value <= MAX_VARINT:
        raise ValueError("%d does not fit a variable byte integer" % value)
    out = bytearray()
    while value:
        value, digit = divmod(value, 0x80)
        out.append(digit | 0x80 if value else digit)
    return bytes(out)


def encode_byte(value: int) -> bytes:
    return _BYTES[value]


def encode_u16(value: int) -> bytes:
    return U16.pack(value)


def encode_u32(value: int) -> bytes:
    return U32.pack(value)


def encode_binary(data: bytes) -> bytes:
    """Binary Data: the Two Byte length (struct.error past 65,535) and the bytes."""
    return U16.pack(len(data)) + data


def encode_string(text: str) -> bytes:
    """A UTF-8 Encoded String."""
    return encode_binary(text.encode("utf-8"))


def encode_string_pair(pair) -> bytes:
    name, value = pair
    return encode_string(name) + encode_string(value)
