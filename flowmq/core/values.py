"""Typed header values and their binary form.

A header value of a Message is a str (NATS, MQTT 5 user properties), or:

- ``bytes`` (Kafka header values, AMQP byte arrays),
- ``None`` (a Kafka null header, AMQP void),
- ``bool``, ``int`` (-2**63 .. 2**63-1: AMQP's widest integer), ``float``,
  ``decimal.Decimal``, ``Timestamp`` (AMQP field-table types),
- a ``dict`` (a nested AMQP field table: str name -> value) or a ``tuple``
  (an AMQP field array) of such values, nested ``MAX_DEPTH`` deep at most.

``encode_value``/``decode_value`` give every such value a self-describing
binary form (a type byte, then its data; integers little-endian), which the
store record (records.py) and the NATS rendering of nested values
(flowmq/nats/convert.py) share. Decoding bounds-checks every length and
raises ValueError on anything malformed.
"""

from __future__ import annotations

import struct
from decimal import Decimal, InvalidOperation

#: Nested tables/arrays deeper than this are refused (decoding recurses).
MAX_DEPTH = 32


class Timestamp(int):
    """An AMQP field-table timestamp: whole seconds since the epoch."""

    __slots__ = ()

    def __repr__(self):
        return "Timestamp(%d)" % int(self)


_NONE, _STR, _BYTES, _INT, _TRUE, _FALSE, _FLOAT, _DECIMAL, _TIMESTAMP, _TABLE, _ARRAY = b"NSXItfDMTFA"
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def encode_name(name: str) -> bytes:
    """A header or table name: u16 length and its UTF-8."""
    data = _text(name)
    if len(data) > 0xFFFF:
        raise ValueError("header name of %d bytes is longer than 65535" % len(data))
    return _U16.pack(len(data)) + data


def encode_value(value, depth: int = 0) -> bytes:
    """The binary form of one typed value; ValueError for any other value."""
    kind = type(value)
    if kind is str:
        data = _text(value)
        return bytes((_STR,)) + _U32.pack(len(data)) + data
    if kind is bytes:
        return bytes((_BYTES,)) + _U32.pack(len(value)) + value
    if value is None:
        return bytes((_NONE,))
    if kind is bool:
        return bytes((_TRUE if value else _FALSE,))
    if kind is int or kind is Timestamp:
        if not _I64_MIN <= value <= _I64_MAX:
            raise ValueError("integer header value %d does not fit 64 bits" % value)
        return bytes((_INT if kind is int else _TIMESTAMP,)) + _I64.pack(value)
    if kind is float:
        return bytes((_FLOAT,)) + _F64.pack(value)
    if kind is Decimal:
        data = str(value).encode("ascii")
        return bytes((_DECIMAL,)) + _U16.pack(len(data)) + data
    if kind is dict or kind is tuple:
        if depth >= MAX_DEPTH:
            raise ValueError("header value nested deeper than %d" % MAX_DEPTH)
        if kind is dict:
            parts = [bytes((_TABLE,)), _U32.pack(len(value))]
            for name, item in value.items():
                if type(name) is not str:
                    raise ValueError("table name %r is not a str" % (name,))
                parts.append(encode_name(name))
                parts.append(encode_value(item, depth + 1))
        else:
            parts = [bytes((_ARRAY,)), _U32.pack(len(value))]
            parts.extend(encode_value(item, depth + 1) for item in value)
        return b"".join(parts)
    raise ValueError("%s is not a header value type" % kind.__name__)


def _take(data, offset: int, size: int):
    end = offset + size
    if end > len(data):
        raise ValueError("typed value overruns its data")
    return bytes(data[offset:end]), end


def decode_name(data, offset: int):
    """``(name, next offset)`` of an ``encode_name`` at ``offset``."""
    raw, offset = _take(data, offset, 2)
    raw, offset = _take(data, offset, _U16.unpack(raw)[0])
    return raw.decode("utf-8", "surrogatepass"), offset


def decode_value(data, offset: int = 0, depth: int = 0):
    """``(value, next offset)`` of the ``encode_value`` at ``offset``; ValueError if malformed."""
    raw, offset = _take(data, offset, 1)
    tag = raw[0]
    if tag == _STR or tag == _BYTES:
        raw, offset = _take(data, offset, 4)
        raw, offset = _take(data, offset, _U32.unpack(raw)[0])
        return (raw.decode("utf-8", "surrogatepass") if tag == _STR else raw), offset
    if tag == _NONE:
        return None, offset
    if tag == _TRUE or tag == _FALSE:
        return tag == _TRUE, offset
    if tag == _INT or tag == _TIMESTAMP:
        raw, offset = _take(data, offset, 8)
        number = _I64.unpack(raw)[0]
        return (number if tag == _INT else Timestamp(number)), offset
    if tag == _FLOAT:
        raw, offset = _take(data, offset, 8)
        return _F64.unpack(raw)[0], offset
    if tag == _DECIMAL:
        raw, offset = _take(data, offset, 2)
        raw, offset = _take(data, offset, _U16.unpack(raw)[0])
        try:
            return Decimal(raw.decode("ascii")), offset
        except (InvalidOperation, UnicodeDecodeError):
            raise ValueError("bad decimal %r" % raw[:40]) from None
    if tag == _TABLE or tag == _ARRAY:
        if depth >= MAX_DEPTH:
            raise ValueError("typed value nested deeper than %d" % MAX_DEPTH)
        raw, offset = _take(data, offset, 4)
        count = _U32.unpack(raw)[0]
        if count > len(data) - offset:  # every item takes a byte at least
            raise ValueError("typed value count overruns its data")
        if tag == _ARRAY:
            items = []
            for _ in range(count):
                item, offset = decode_value(data, offset, depth + 1)
                items.append(item)
            return tuple(items), offset
        table = {}
        for _ in range(count):
            name, offset = decode_name(data, offset)
            table[name], offset = decode_value(data, offset, depth + 1)
        return table, offset
    raise ValueError("unknown typed value tag %r" % bytes((tag,)))
