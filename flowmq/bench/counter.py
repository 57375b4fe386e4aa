"""The subscribers' fast frame counters.

In a throughput run every frame a subscriber gets has the same shape (same
subject or topic and size), so the frames are back to back and of one
length F. ``StreamCounter`` keeps the bytes read in one buffer and, for each
run of k whole frames, asks its subclass to check the run as a whole (a few
slices: O(1) Python work per read, so a Python subscriber keeps up with a
fast server), then counts k. Anything else in the stream breaks that
alignment; the counter then steps through the buffer one operation at a
time until it is aligned again.

``FrameCounter`` counts NATS MSG frames: it checks the first and the last
frame header and the last CRLF of a run, answers PINGs, and counts frames of
another shape apart. ``mqttcounter`` has the MQTT ones.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from flowmq.bench.protocol import MAX_LINE, PONG, BenchError

_MAX_BUFFER = 256 * 1024 * 1024


class StreamCounter(metaclass=ABCMeta):
    """The buffer and the scan loop; subclasses say what a frame is
    (``frame_len``, ``_bulk``) and how to step over anything else (``_one``)."""

    def __init__(self, frame_len: int, bufsize: int = 1 << 20):
        self.frame_len = frame_len
        self.count = 0      # frames of the expected shape
        self.other = 0      # frames of any other shape
        self.errors: list = []
        self.nbytes = 0
        self.closed = False
        self._reply: list = []
        self._buf = bytearray(max(bufsize, 4 * frame_len + 65536))
        self._view = memoryview(self._buf)
        self._fill = 0

    def recv(self, sock) -> int:
        """One ``recv_into``; returns the bytes read (0 when the server closed)."""
        if self._fill == len(self._buf):
            self._grow()
        n = sock.recv_into(self._view[self._fill:])
        if n:
            self.nbytes += n
            self._fill += n
            self._scan()
        else:
            self.closed = True
        return n

    def feed(self, data: bytes) -> None:
        """Take bytes that were read elsewhere (e.g. during the handshake)."""
        for start in range(0, len(data), 65536):
            chunk = data[start:start + 65536]
            while len(self._buf) - self._fill < len(chunk):
                self._grow()
            self._buf[self._fill:self._fill + len(chunk)] = chunk
            self._fill += len(chunk)
            self.nbytes += len(chunk)
            self._scan()

    def take_reply(self) -> bytes:
        """What the subscriber owes the server (PONGs, PUBACKs)."""
        if not self._reply:
            return b""
        out = b"".join(self._reply)
        self._reply = []
        return out

    def _grow(self) -> None:
        size = len(self._buf)
        if size * 2 > _MAX_BUFFER:
            raise BenchError("a single frame larger than %d bytes" % (_MAX_BUFFER // 2))
        self._view.release()
        self._buf.extend(bytes(size))
        self._view = memoryview(self._buf)

    def _scan(self) -> None:
        buf = self._buf
        fill = self._fill
        frame = self.frame_len
        pos = 0
        # Each turn consumes at least one operation or stops: bounded by fill.
        for _ in range(fill + 1):
            if pos >= fill:
                break
            k = (fill - pos) // frame
            if k and self._bulk(pos, k):
                self.count += k
                pos += k * frame
                continue
            step = self._one(pos, fill)
            if not step:
                break
            pos += step
        if pos:
            rest = fill - pos
            if rest:
                buf[0:rest] = buf[pos:fill]
            self._fill = rest

    @abstractmethod
    def _bulk(self, pos: int, k: int) -> bool:
        """Are the k frames at ``pos`` all of the expected shape? (They are
        counted, and anything owed for them goes into ``_reply``.)"""

    @abstractmethod
    def _one(self, pos: int, fill: int) -> int:
        """Consume one operation at ``pos``; 0 if it is not complete yet."""


class FrameCounter(StreamCounter):
    """Counts the NATS frames ``header + payload + CRLF`` that arrive on a socket."""

    def __init__(self, header: bytes, size: int, bufsize: int = 1 << 20):
        StreamCounter.__init__(self, len(header) + size + 2, bufsize)
        self.header = header
        self.pings = 0

    def _bulk(self, pos: int, k: int) -> bool:
        buf = self._buf
        end = pos + k * self.frame_len
        return (buf.startswith(self.header, pos) and buf.startswith(self.header, end - self.frame_len)
                and buf[end - 2] == 13 and buf[end - 1] == 10)

    def _one(self, pos: int, fill: int) -> int:
        buf = self._buf
        eol = buf.find(b"\r\n", pos, fill)
        if eol < 0:
            if fill - pos > MAX_LINE:
                raise BenchError("protocol line from server longer than %d bytes" % MAX_LINE)
            return 0
        if buf.startswith(b"MSG ", pos) or buf.startswith(b"HMSG ", pos):
            try:
                size = int(bytes(buf[pos:eol]).split()[-1])
            except ValueError:
                raise BenchError("malformed line %r" % bytes(buf[pos:eol])[:200])
            end = eol + 2 + size + 2
            if end > fill:
                return 0
            if end - pos == self.frame_len and buf.startswith(self.header, pos):
                self.count += 1
            else:
                self.other += 1
            return end - pos
        line = bytes(buf[pos:eol])
        word = line.split(b" ", 1)[0].upper()
        if word == b"PING":
            self.pings += 1
            self._reply.append(PONG)
        elif word == b"-ERR":
            self.errors.append(line[5:].strip().strip(b"'").decode("utf-8", "replace"))
        return eol + 2 - pos
