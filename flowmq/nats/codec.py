"""The NATS client protocol codec: bytes in, operations out, and the encoders
for what the server sends. Sans-IO: no Twisted, no broker.

The parser works on whole buffers (``bytes.find`` for line ends, one slice per
payload) and only splits bytes. A payload is copied once: sliced out of the
read that holds it, or, when it spans reads, kept as a list of chunks (the
first the read it began in, from where it began) and joined once when it
is complete (``flowmq.buffers.spliced`` puts the two pieces of a payload
that spans two reads together); the reads after it are parsed where they
lie. Only a control line cut off by the end of a read is put together with
the next read. ``feed_read_buffer`` takes a read in flowmq.rawbytes' reused
read buffer instead (PyPy) and hands a run's payloads out where they lie
there. The parser checks sizes and syntax, and hands complete
operations to the protocol, which decides what they mean. Once it meets an
error it reports it after the operations before it and then stops for good,
because the server closes such a connection (nats-server does the same).

Operations are tuples whose first item is one of the ``OP_*`` codes:

- ``(OP_PUB, subject, reply|None, payloads)``: one PUB, or a run of PUBs
  in a row with the same control line (same subject, reply and size), as
  publishers send them: ``payloads`` is the list of their payloads, in order
  (from ``feed_read_buffer``: a list or a ``flowmq.rawbytes.PayloadRun``)
- ``(OP_HPUB, subject, reply|None, header_block, payload)``; the header
  block is empty for ``HPUB <subject> [reply] 0 <size>``
- ``(OP_SUB, subject, queue|None, sid)``
- ``(OP_UNSUB, sid, max_msgs|None)``
- ``(OP_CONNECT, json_bytes)``, ``(OP_PING,)``, ``(OP_PONG,)``
- ``(OP_ERROR, text)``: the input was malformed; the text is the -ERR text.

Subjects, queues and sids are bytes, as they arrived.
"""

from __future__ import annotations

import json

from flowmq import rawbytes
from flowmq.buffers import spliced

OP_PUB, OP_HPUB, OP_SUB, OP_UNSUB, OP_CONNECT, OP_PING, OP_PONG, OP_ERROR = range(8)

CRLF = b"\r\n"
PING = b"PING\r\n"
PONG = b"PONG\r\n"
OK = b"+OK\r\n"

ERR_UNKNOWN_OP = "Unknown Protocol Operation"
ERR_MAX_PAYLOAD = "Maximum Payload Violation"
ERR_MAX_CONTROL_LINE = "Maximum Control Line Exceeded"

_UPPER_VERBS = frozenset((b"HPUB", b"SUB", b"UNSUB", b"PING", b"PONG", b"CONNECT"))
_PING_OP = (OP_PING,)
_PONG_OP = (OP_PONG,)
_MAX_DIGITS = 18  # sizes and counts: int() of longer digit strings is slow and pointless


class NatsParser:
    """Incremental parser for what a NATS client sends."""

    def __init__(self, max_control_line: int = 4096, max_payload: int = 1048576):
        self.max_control_line = max_control_line
        self.max_payload = max_payload
        self._line = b""  # the start of a control line that the last read cut off
        # A PUB/HPUB whose payload the last read cut off: its arguments
        # (subject, reply, header size or -1, total size), the chunks of its
        # payload and CRLF so far, their size, and the size they will have.
        self._cut_pub = None
        self._chunks: list = []
        self._held = 0
        self._needed = 0
        self._skip = 0  # where the payload begins in the first chunk
        self._failed = False
        # The last PUB control line (with its LF) and its subject, reply and
        # size: a PUB with the same line is taken without splitting it again.
        self._last_pub = (None, None, None, 0)

    def feed(self, data: bytes) -> list:
        """Take the next bytes from the wire; return the operations they complete."""
        if self._failed:
            return []
        ops = []
        pos = 0
        if self._cut_pub is not None:
            held = self._held + len(data)
            if held < self._needed:
                self._chunks.append(data)
                self._held = held
                return ops
            pos = self._needed - self._held
            op = self._complete_in_two(data, pos)
            if op is None:
                self._chunks.append(memoryview(data)[:pos] if pos < len(data) else data)
                op = self._complete()
            if op[0] == OP_ERROR:
                return self._fail(ops, op[1])
            ops.append(op)
            if op[0] == OP_PUB:  # PUBs with its line go on its run
                return self._parse(data, pos, ops, op[3])
        elif self._line:
            data = self._line + data
            self._line = b""
        return self._parse(data, pos, ops, None)

    def takes_read_buffer(self, below: int) -> bool:
        """The next read may go to ``feed_read_buffer``: it goes on from a
        PUB whose payload has ``rawbytes.OUTPUT_FROM`` bytes or more and
        fewer than ``below`` (with no control line cut off, and the last PUB
        not an HPUB). Smaller payloads take ``feed``: for them a comparison
        through cffi per PUB costs more than the copy of the read it saves;
        larger ones too: a read rarely holds one whole, and ``feed`` takes
        the reads of a payload as they are."""
        cut = self._cut_pub
        return (not self._failed and not self._line and rawbytes.OUTPUT_FROM <= self._last_pub[3] < below
                and (cut is None or cut[2] < 0))

    def feed_read_buffer(self, size: int) -> list:
        """``feed`` for the ``size`` bytes read into flowmq.rawbytes'
        READ_BUFFER, when ``takes_read_buffer(...)``. A run of PUBs with the
        last PUB's line (the payload the read before cut off included)
        becomes one OP_PUB whose payloads are a PayloadRun: where they lie
        in the buffer, not copied; it is always the first operation
        returned. Everything else is copied out and parsed as bytes: the
        rest of the read after the run (usually a PUB that the read cuts
        off), and the whole read when it does not complete the payload
        the read before cut off."""
        last_pub, subject, reply, total = self._last_pub
        cut = self._cut_pub
        if cut is not None and self._needed - self._held > size:
            return self.feed(rawbytes.read_bytes(0, size))
        ops = []
        pos = 0
        head = []
        if cut is not None:  # the PUB the last read cut off: the rest of its payload, copied
            pos = self._needed - self._held
            ops = self.feed(rawbytes.read_bytes(0, pos))
            if self._failed:
                return ops
            head = ops.pop()[3]  # its OP_PUB: the run's first payload
        memcmp = rawbytes.memcmp
        buffer = rawbytes.READ_BUFFER
        line_size = len(last_pub)
        between = CRLF + last_pub  # a payload's CRLF and the next PUB's line
        between_size = line_size + 2
        stride = line_size + total + 2
        start = pos + line_size
        count = 0
        if pos + stride <= size and memcmp(buffer + pos, last_pub, line_size) == 0:
            while True:  # pos: at a PUB line like the last, whose payload and CRLF are in the read
                stop = pos + line_size + total
                if stop + between_size <= size and memcmp(buffer + stop, between, between_size) == 0:
                    count += 1
                    pos = stop + 2
                    if pos + stride <= size:
                        continue
                    break
                if memcmp(buffer + stop, CRLF, 2) == 0:
                    count += 1
                    pos = stop + 2
                break
        if count or head:
            ops.append((OP_PUB, subject, reply, rawbytes.PayloadRun(head, start, count, stride, total)))
        if pos < size:
            return self._parse(rawbytes.read_bytes(pos, size), 0, ops, None)
        return ops

    def _complete_in_two(self, data: bytes, pos: int):
        """The operation of a PUB whose payload began in one read (the only
        chunk, from ``_skip`` on) and ends in ``data``, its CRLF just before
        ``pos``: the payload put together with one copy (an OP_ERROR if
        that CRLF is not one). None for any other cut PUB or HPUB."""
        subject, reply, header_size, total = self._cut_pub
        if header_size >= 0 or len(self._chunks) != 1:
            return None
        first, skip = self._chunks[0], self._skip
        rest = total - (len(first) - skip)  # the payload's bytes in ``data``
        if rest < 0:  # the first read holds all of it and part of its CRLF
            return None
        self._cut_pub, self._chunks = None, []
        if data[rest:pos] != CRLF:
            return (OP_ERROR, ERR_UNKNOWN_OP)
        return (OP_PUB, subject, reply, [spliced(first, skip, data, rest)])

    def _complete(self) -> tuple:
        """The operation of the PUB/HPUB whose chunks are all here."""
        subject, reply, header_size, total = self._cut_pub
        chunks = self._chunks
        if self._skip:
            chunks[0] = memoryview(chunks[0])[self._skip:]
        self._cut_pub, self._chunks = None, []
        if header_size < 0:
            op = (OP_PUB, subject, reply, [_cut(chunks, total)])
        else:
            op = (OP_HPUB, subject, reply, _cut(chunks, header_size), _cut(chunks, total - header_size))
        if _cut(chunks, 2) != CRLF:
            return (OP_ERROR, ERR_UNKNOWN_OP)
        return op

    def _parse(self, buf: bytes, pos: int, ops: list, run) -> list:
        """The operations of ``buf`` from ``pos`` on, after ``ops``; ``run``:
        the payloads of the last of ``ops`` when it is a PUB with the line
        ``_last_pub``, else None."""
        append = ops.append
        end = len(buf)
        find = buf.find
        starts = buf.startswith
        max_line = self.max_control_line
        max_payload = self.max_payload
        last_pub, last_subject, last_reply, last_total = self._last_pub
        if last_pub is not None:
            line_size = len(last_pub)
            # A payload's CRLF and the next PUB's line, if that has the same.
            between = CRLF + last_pub
            between_size = line_size + 2
        while pos < end:
            if last_pub is not None and starts(last_pub, pos):
                # PUBs with the same line as the last PUB: their arguments are
                # known. Each payload is followed by its CRLF and, while the
                # run goes on, by the same line: one comparison checks both.
                taken = pos
                while True:
                    stop = pos + line_size + last_total
                    if stop + 2 > end:
                        break
                    goes_on = buf[stop:stop + between_size] == between
                    if not goes_on and (buf[stop] != 13 or buf[stop + 1] != 10):
                        break
                    if run is None:
                        run = []
                        append((OP_PUB, last_subject, last_reply, run))
                    run.append(buf[stop - last_total:stop])
                    pos = stop + 2
                    if not goes_on:
                        break
                if pos > taken:
                    continue
            eol = find(b"\n", pos)
            if eol < 0:
                # The limit is on the line without its CR LF ending.
                if end - pos - (buf[end - 1] == 13) > max_line:
                    return self._fail(ops, ERR_MAX_CONTROL_LINE)
                break
            # The limit is on the line without its CR LF ending; split() drops the CR.
            if eol - pos > max_line and (eol - pos > max_line + 1 or buf[eol - 1] != 13):
                return self._fail(ops, ERR_MAX_CONTROL_LINE)
            args = buf[pos:eol].split()
            if not args:
                return self._fail(ops, ERR_UNKNOWN_OP)
            verb = args[0]
            if verb != b"PUB" and verb not in _UPPER_VERBS:
                verb = verb.upper()
            if verb == b"PUB" or verb == b"HPUB":
                if verb == b"PUB":  # the hot path: its arguments checked inline
                    count = len(args)
                    total = args[-1]
                    if (count != 3 and count != 4) or not total.isdigit() or len(total) > _MAX_DIGITS:
                        return self._fail(ops, self._pub(args, False))
                    total = int(total)
                    if total > max_payload:
                        return self._fail(ops, ERR_MAX_PAYLOAD)
                    subject, reply, header_size = args[1], (args[2] if count == 4 else None), -1
                    last_pub, last_subject, last_reply, last_total = buf[pos:eol + 1], subject, reply, total
                    line_size = eol + 1 - pos
                    between, between_size = CRLF + last_pub, line_size + 2
                    self._last_pub = (last_pub, subject, reply, total)
                else:
                    op = self._pub(args, True)
                    if isinstance(op, str):
                        return self._fail(ops, op)
                    subject, reply, header_size, total = op
                start = eol + 1
                stop = start + total
                if stop + 2 > end:  # the payload goes on in the next reads
                    self._cut_pub = (subject, reply, header_size, total)
                    self._chunks, self._skip = ([buf], start) if start < end else ([], 0)
                    self._held = end - start
                    self._needed = total + 2
                    return ops
                if buf[stop:stop + 2] != CRLF:
                    return self._fail(ops, ERR_UNKNOWN_OP)
                if header_size < 0:
                    run = [buf[start:stop]]
                    append((OP_PUB, subject, reply, run))
                else:
                    run = None
                    split = start + header_size
                    append((OP_HPUB, subject, reply, buf[start:split], buf[split:stop]))
                pos = stop + 2
                continue
            line_start, pos, run = pos, eol + 1, None
            if verb == b"PING":
                append(_PING_OP)
            elif verb == b"PONG":
                append(_PONG_OP)
            elif verb == b"SUB":
                if len(args) == 3:
                    append((OP_SUB, args[1], None, args[2]))
                elif len(args) == 4:
                    append((OP_SUB, args[1], args[2], args[3]))
                else:
                    return self._fail(ops, "Parse Error: SUB takes <subject> [queue group] <sid>")
            elif verb == b"UNSUB":
                if len(args) == 2:
                    append((OP_UNSUB, args[1], None))
                elif len(args) == 3:
                    # nats-server reads a max that is not a number as "none"
                    append((OP_UNSUB, args[1], _size(args[2])))
                else:
                    return self._fail(ops, "Parse Error: UNSUB takes <sid> [max_msgs]")
            elif verb == b"CONNECT":
                append((OP_CONNECT, buf[line_start:eol].rstrip(b"\r").split(None, 1)[1] if len(args) > 1 else b""))
            else:
                return self._fail(ops, ERR_UNKNOWN_OP)
        if pos < end:
            self._line = buf[pos:]
        return ops

    def _pub(self, args: list, headers: bool):
        """``(subject, reply, [header_size,] total_size)`` of a PUB/HPUB line, or an error text."""
        count = len(args) - (1 if headers else 0)
        if count not in (3, 4):
            if headers:
                return "Parse Error: HPUB takes <subject> [reply] <header size> <total size>"
            return "Parse Error: PUB takes <subject> [reply] <size>"
        sizes = [_size(size) for size in (args[-2:] if headers else args[-1:])]
        if None in sizes:
            return "Parse Error: bad or missing size"
        total = sizes[-1]
        if total > self.max_payload:
            return ERR_MAX_PAYLOAD
        reply = args[2] if count == 4 else None
        if headers:
            header_size = sizes[0]
            if header_size > total:
                return "Parse Error: header size larger than total size"
            return (args[1], reply, header_size, total)
        return (args[1], reply, total)

    def _fail(self, ops: list, text: str) -> list:
        self._failed = True
        self._line = b""
        self._cut_pub, self._chunks = None, []
        ops.append((OP_ERROR, text))
        return ops


def _cut(chunks: list, size: int) -> bytes:
    """The first ``size`` bytes of ``chunks``, taken off it and joined once."""
    taken = []
    while size:
        chunk = chunks[0]
        if len(chunk) <= size:
            taken.append(chunk)
            size -= len(chunk)
            del chunks[0]
        else:
            chunk = memoryview(chunk)
            taken.append(chunk[:size])
            chunks[0] = chunk[size:]
            size = 0
    return b"".join(taken)


def _size(text: bytes):
    """A size or count from the wire: decimal digits, at most _MAX_DIGITS of them, else None."""
    if text.isdigit() and len(text) <= _MAX_DIGITS:
        return int(text)
    return None


def encode_info(info: dict) -> bytes:
    return b"INFO " + json.dumps(info, separators=(",", ":")).encode() + CRLF


def encode_err(text: str) -> bytes:
    return b"-ERR '" + text.encode("utf-8", "replace") + b"'" + CRLF


def encode_msg(subject: bytes, sid: bytes, reply: bytes | None, payload: bytes) -> bytes:
    """A MSG frame (header line, payload and trailing CRLF), as one bytes
    object: one formatting, the cheapest for the small payloads of the hot path."""
    if reply:
        return b"MSG %s %s %s %d\r\n%s\r\n" % (subject, sid, reply, len(payload), payload)
    return b"MSG %s %s %d\r\n%s\r\n" % (subject, sid, len(payload), payload)


def msg_head(subject: bytes, sid: bytes, reply: bytes | None, size: int) -> bytes:
    """The header line of a MSG frame whose ``size``-byte payload and
    trailing CRLF are sent as pieces of their own."""
    if reply:
        return b"MSG %s %s %s %d\r\n" % (subject, sid, reply, size)
    return b"MSG %s %s %d\r\n" % (subject, sid, size)


def hmsg_head(subject: bytes, sid: bytes, reply: bytes | None, header_block: bytes, size: int) -> bytes:
    """An HMSG frame up to its payload (header line and header block), for
    a ``size``-byte payload sent as a piece of its own."""
    hsize = len(header_block)
    if reply:
        return b"HMSG %s %s %s %d %d\r\n%s" % (subject, sid, reply, hsize, hsize + size, header_block)
    return b"HMSG %s %s %d %d\r\n%s" % (subject, sid, hsize, hsize + size, header_block)


def encode_hmsg(subject: bytes, sid: bytes, reply: bytes | None, header_block: bytes, payload: bytes) -> bytes:
    """An HMSG frame; ``header_block`` is the whole ``NATS/1.0...\\r\\n\\r\\n`` block."""
    return hmsg_head(subject, sid, reply, header_block, len(payload)) + payload + CRLF


HEADER_VERSION = b"NATS/1.0"


class BadHeader(ValueError):
    """A header block that does not follow the NATS/1.0 header format."""


def parse_headers(block: bytes):
    """``(status, pairs)`` of a header block: the status code (b"" if none) and
    the ``(name, value)`` string pairs in order."""
    if not block.startswith(HEADER_VERSION) or not block.endswith(b"\r\n\r\n"):
        raise BadHeader(block[:40])
    lines = block[:-4].split(b"\r\n")
    status = lines[0][len(HEADER_VERSION):].strip()[:3]
    pairs = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise BadHeader(line[:40])
        pairs.append((name.strip().decode("utf-8", "replace"), value.strip().decode("utf-8", "replace")))
    return status, tuple(pairs)


#: The key under which a message's NATS header block is kept in its
#: Message.wire_cache (built once, reused by every delivery).
WIRE_CACHE_HEADERS = "nats.headers"


def encode_headers(pairs, status: bytes = b"", description: bytes = b"") -> bytes:
    """A NATS/1.0 header block for ``(name, value)`` pairs, with an optional
    status code and its description (``NATS/1.0 404 No Messages``)."""
    first = HEADER_VERSION + (b" " + status if status else b"") + (b" " + description if description else b"")
    lines = [first]
    for name, value in pairs:
        lines.append(("%s: %s" % (name, value)).encode("utf-8"))
    return b"\r\n".join(lines) + b"\r\n\r\n"
