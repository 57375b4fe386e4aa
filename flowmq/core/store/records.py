"""The record codec of the storage engine: bytes in, bytes out, no I/O.

Every record, in a segment file or in a stream's tombstone file, is::

    crc32     u32   CRC32 of every byte after this field (type ... payload)
    type      u8    MESSAGE, FIRST, DELETED or ERASED
    length    u32   the whole record, header included
    seq       i64   the message's sequence (FIRST: the new first sequence)
    timestamp i64   nanoseconds since the epoch (0 for markers)
    topic_len u16   bytes of the UTF-8 topic
    hdrs_len  u32   bytes of the encoded headers
    topic, headers, payload

All integers are little-endian; the header is ``HEADER_SIZE`` (31) bytes.
The payload is what is left of ``length``. Markers:

- FIRST: every sequence below ``seq`` is gone (limits, expiry, purges);
- DELETED: the payload is a list of u64 sequences that are gone;
- ERASED: a message overwritten in place by ``delete(erase=True)``: same
  length, sequence and timestamp as before, a valid CRC, zeroed contents,
  so a scan steps over it.

The headers field holds a message's headers and properties, in one of two
versions (``encode_meta`` picks; both are read):

- version 1, what FlowMQ wrote before properties existed and still writes
  for a message with str header values and no properties (a NATS publish):
  per pair, ``u16 name length, u32 value length, name, value`` (UTF-8,
  ``surrogatepass`` so any Python string round-trips);
- version 2: the 6 bytes ``FF FF FF FF FF FF`` (which no version 1 block
  can start with: its first pair would be longer than ``MAX_RECORD``), a
  version byte (2), ``u32`` length of the properties, the properties as
  ``u8 field number`` (1 + its index in ``Properties.FIELDS``) and a typed
  value (flowmq/core/values.py) each, then the headers as a name
  (``u16`` length, UTF-8) and a typed value each. A reader skips a field
  number it does not know (the typed value says its own length).

A message record is always ``size + SIZE_DELTA`` bytes long, where its
*size* is ``len(topic) + len(encoded headers) + len(payload) + OVERHEAD``
(16); that is also what the message counts toward ``max_bytes`` unless the
store was given a sizer (see base.MessageStore).

``scan`` and ``decode`` stop at the first byte that does not start a
complete, valid record (torn tail, flipped bit, garbage) and return its
offset; every length they read is bounds-checked before use.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array

from flowmq.core.message import Properties
from flowmq.core.values import decode_name, decode_value, encode_name, encode_value

MESSAGE = 1
FIRST = 2
DELETED = 3
ERASED = 4
_TYPES = frozenset((MESSAGE, FIRST, DELETED, ERASED))

_HEAD = struct.Struct("<BIqqHI")  # the header after the CRC field
_CRC = struct.Struct("<I")
_PAIR = struct.Struct("<HI")
_U32 = struct.Struct("<I")
HEADER_SIZE = _CRC.size + _HEAD.size
OVERHEAD = 16
SIZE_DELTA = HEADER_SIZE - OVERHEAD
#: No record may be longer: a corrupt length can never make a reader allocate more.
MAX_RECORD = 1 << 28
#: The largest sequence the i64 ``seq`` field holds: the last a stream can
#: ever have (nats-server's are uint64; FlowMQ refuses what does not fit here).
MAX_SEQ = (1 << 63) - 1
MAX_TOPIC = 0xFFFF
_LITTLE = sys.byteorder == "little"


class Record:
    """One decoded record: ``type``, ``seq``, ``timestamp``, ``topic`` (str),
    ``headers`` (tuple of pairs or None), ``payload`` (bytes) and
    ``properties`` (a Properties or None)."""

    __slots__ = ("type", "seq", "timestamp", "topic", "headers", "payload", "properties")

    def __init__(self, rtype, seq, timestamp, topic, headers, payload, properties=None):
        self.type = rtype
        self.seq = seq
        self.timestamp = timestamp
        self.topic = topic
        self.headers = headers
        self.payload = payload
        self.properties = properties

    def __repr__(self):
        return "<Record type=%d seq=%d %r %d bytes>" % (self.type, self.seq, self.topic, len(self.payload))


def encode_headers(headers) -> bytes:
    """The version 1 block of a sequence of (name, value) string pairs."""
    parts = []
    for name, value in headers:
        name_b = name.encode("utf-8", "surrogatepass")
        value_b = value.encode("utf-8", "surrogatepass")
        parts.append(_PAIR.pack(len(name_b), len(value_b)))
        parts.append(name_b)
        parts.append(value_b)
    return b"".join(parts)


#: What a version 2 block starts with: a version 1 pair of these lengths
#: (0xFFFF + 0xFFFFFFFF bytes) is longer than any record may be.
_V2_MARK = b"\xff" * _PAIR.size
_V2_HEAD = _V2_MARK + b"\x02"
_FIELD_NUMBERS = {name: number for number, name in enumerate(Properties.FIELDS, 1)}


def encode_meta(headers, properties) -> bytes:
    """The headers field of a message record: b"" when there is nothing to
    keep, version 1 when every header value is a str and there are no
    properties, else version 2. ValueError for a value that is not one of
    flowmq.core.values' types."""
    if properties is None:
        if not headers:
            return b""
        if all(type(value) is str for _, value in headers):
            return encode_headers(headers)
    parts = [_V2_HEAD, b""]
    if properties is not None:
        for name, value in properties.items():
            parts.append(bytes((_FIELD_NUMBERS[name],)))
            parts.append(encode_value(value))
    parts[1] = _U32.pack(sum(len(part) for part in parts[2:]))
    for name, value in headers or ():
        parts.append(encode_name(name))
        parts.append(encode_value(value))
    return b"".join(parts)


def decode_meta(data):
    """``(headers, properties)`` of a record's headers field (either version;
    None for what it does not hold); ValueError if it is malformed."""
    if not data:
        return None, None
    if bytes(data[: len(_V2_MARK)]) != _V2_MARK:
        return _decode_v1(data), None
    data = bytes(data)
    start = len(_V2_HEAD) + _U32.size
    if len(data) < start or not data.startswith(_V2_HEAD):
        raise ValueError("unknown or truncated headers version")
    end = start + _U32.unpack_from(data, len(_V2_HEAD))[0]
    if end > len(data):
        raise ValueError("properties overrun their block")
    properties = None
    offset = start
    while offset < end:
        number = data[offset]
        value, offset = decode_value(data, offset + 1)
        if 1 <= number <= len(Properties.FIELDS):  # a later version's field is skipped
            if properties is None:
                properties = Properties()
            setattr(properties, Properties.FIELDS[number - 1], value)
    if offset != end:
        raise ValueError("properties overrun their length")
    pairs = []
    while offset < len(data):
        name, offset = decode_name(data, offset)
        value, offset = decode_value(data, offset)
        pairs.append((name, value))
    return (tuple(pairs) or None), properties


def decode_headers(data) -> tuple | None:
    """The header pairs of a record's headers field (either version; None
    when there are none); ValueError if malformed."""
    return decode_meta(data)[0]


def _decode_v1(data) -> tuple:
    """The pairs of a version 1 block; ValueError if malformed."""
    pairs = []
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _PAIR.size:
            raise ValueError("truncated header pair")
        name_len, value_len = _PAIR.unpack_from(data, offset)
        offset += _PAIR.size
        if name_len + value_len > end - offset:
            raise ValueError("header pair overruns its block")
        name = bytes(data[offset : offset + name_len]).decode("utf-8", "surrogatepass")
        offset += name_len
        value = bytes(data[offset : offset + value_len]).decode("utf-8", "surrogatepass")
        offset += value_len
        pairs.append((name, value))
    return tuple(pairs)


def _record(rtype, seq, timestamp, topic_b, headers_b, payload) -> bytes:
    length = HEADER_SIZE + len(topic_b) + len(headers_b) + len(payload)
    if length > MAX_RECORD:
        raise ValueError("record of %d bytes is larger than %d" % (length, MAX_RECORD))
    head = _HEAD.pack(rtype, length, seq, timestamp, len(topic_b), len(headers_b))
    body = b"".join((head, topic_b, headers_b, payload))
    return _CRC.pack(zlib.crc32(body)) + body


def encode_message(seq: int, timestamp: int, topic_b: bytes, headers_b: bytes, payload) -> bytes:
    """A MESSAGE record; ``topic_b`` is the UTF-8 topic, ``headers_b`` from ``encode_meta``."""
    if len(topic_b) > MAX_TOPIC:
        raise ValueError("topic of %d bytes is longer than %d" % (len(topic_b), MAX_TOPIC))
    return _record(MESSAGE, seq, timestamp, topic_b, headers_b, payload)


def encode_first(first_seq: int) -> bytes:
    """A FIRST marker: every sequence below ``first_seq`` is gone."""
    return _record(FIRST, first_seq, 0, b"", b"", b"")


def encode_deleted(seqs) -> bytes:
    """A DELETED marker listing the sequences ``seqs``."""
    packed = array("Q", seqs)
    if not _LITTLE:
        packed.byteswap()
    return _record(DELETED, 0, 0, b"", b"", packed.tobytes())


def encode_erased(seq: int, timestamp: int, length: int) -> bytes:
    """An ERASED record of exactly ``length`` bytes to overwrite a message in
    place (it keeps the timestamp, so the segment's timestamps stay in order)."""
    return _record(ERASED, seq, timestamp, b"", b"", bytes(length - HEADER_SIZE))


def deleted_seqs(payload) -> array:
    """The sequences listed in a DELETED record's payload."""
    seqs = array("Q")
    seqs.frombytes(bytes(payload))
    if not _LITTLE:
        seqs.byteswap()
    return seqs


def scan(buf, start: int = 0, end: int | None = None):
    """Walk the valid records of ``buf[start:end]`` (bytes, bytearray or mmap)
    without copying payloads.

    Returns ``(entries, stop)``: one ``(offset, type, length, seq, timestamp,
    topic_len, headers_len)`` tuple per record, and the offset of the first
    byte that does not begin a complete, valid record (``end`` if all are).
    """
    # No memoryview of an mmap: it would pin the mapping (PyPy frees views
    # late); slicing an mmap copies one record at a time instead.
    view = memoryview(buf) if isinstance(buf, (bytes, bytearray)) else buf
    if end is None:
        end = len(view)
    entries = []
    append = entries.append
    unpack = _HEAD.unpack_from
    crc32 = zlib.crc32
    offset = start
    while end - offset >= HEADER_SIZE:
        rtype, length, seq, timestamp, topic_len, headers_len = unpack(view, offset + 4)
        if (
            rtype not in _TYPES
            or length > end - offset
            or length > MAX_RECORD
            or HEADER_SIZE + topic_len + headers_len > length
            or (rtype == DELETED and (length - HEADER_SIZE) % 8)
            or crc32(view[offset + 4 : offset + length]) != _CRC.unpack_from(view, offset)[0]
        ):
            break
        append((offset, rtype, length, seq, timestamp, topic_len, headers_len))
        offset += length
    return entries, offset


def topic_at(buf, offset: int, topic_len: int) -> str:
    """The topic of the record at ``offset`` (from a ``scan`` entry)."""
    start = offset + HEADER_SIZE
    return bytes(buf[start : start + topic_len]).decode("utf-8", "surrogatepass")


def meta_at(buf, offset: int, topic_len: int, headers_len: int):
    """``(headers, properties)`` of the record at ``offset`` (from a ``scan``
    entry): None for what it does not hold, both None if they are malformed
    (the read path then refuses the record anyway)."""
    if not headers_len:
        return None, None
    start = offset + HEADER_SIZE + topic_len
    try:
        return decode_meta(bytes(buf[start : start + headers_len]))
    except (ValueError, UnicodeDecodeError):
        return None, None


def decode(buf, start: int = 0, end: int | None = None):
    """Like ``scan``, but returns ``(records, stop)`` with every record decoded.

    A record whose header block is malformed (possible only if its writer
    was wrong, since the CRC matched) ends the walk like a bad CRC does.
    """
    entries, stop = scan(buf, start, end)
    view = memoryview(buf) if isinstance(buf, (bytes, bytearray)) else buf
    records = []
    for offset, rtype, length, seq, timestamp, topic_len, headers_len in entries:
        body = offset + HEADER_SIZE
        try:
            topic = bytes(view[body : body + topic_len]).decode("utf-8", "surrogatepass")
            headers, properties = decode_meta(view[body + topic_len : body + topic_len + headers_len])
        except (ValueError, UnicodeDecodeError):
            return records, offset
        payload = bytes(view[body + topic_len + headers_len : offset + length])
        records.append(Record(rtype, seq, timestamp, topic, headers, payload, properties))
    return records, stop


def decode_message(data) -> Record | None:
    """The MESSAGE record that is exactly ``data`` (bytes), or None if it is
    not one. (The read path of every stored message: one record, decoded
    directly rather than through ``decode``'s lists.)"""
    length = len(data)
    if length < HEADER_SIZE:
        return None
    rtype, stated, seq, timestamp, topic_len, headers_len = _HEAD.unpack_from(data, 4)
    body = HEADER_SIZE + topic_len
    if (rtype != MESSAGE or stated != length or body + headers_len > length
            or zlib.crc32(memoryview(data)[4:]) != _CRC.unpack_from(data)[0]):
        return None
    try:
        topic = data[HEADER_SIZE:body].decode("utf-8", "surrogatepass")
        headers, properties = decode_meta(data[body : body + headers_len]) if headers_len else (None, None)
    except (ValueError, UnicodeDecodeError):
        return None
    return Record(MESSAGE, seq, timestamp, topic, headers, data[body + headers_len :], properties)
