"""One segment file of a FileStore and its in-memory index.

A segment is ``<first seq, 20 digits>.log``: MESSAGE (and ERASED) records
back to back. Its index holds one entry per record, in parallel arrays (no
Python object per message): sequence, file offset, timestamp, size (the
record's length less ``records.SIZE_DELTA``), counted size (what the message
counts toward the stream's bytes: the store's sizer's figure), topic (a
list of shared, interned strings) and a live flag (a bytearray, so that
finding and counting live entries runs at C speed). Liveness is not part
of the file: it comes from the stream's tombstone file.

When a segment is sealed, the index (without the live flags) is written to
``<first seq>.idx`` so that start-up need not read the segment. The .idx
records the .log's size and ends with a CRC32; one that does not match is
ignored and the segment is scanned instead.

.idx layout (little-endian): magic ``FMQIDX02``, u64 log size, u64 entry
count, u32 topic count; the arrays seqs (u64), offsets (u64), timestamps
(i64), sizes (u32), counted sizes (u32), topic numbers (u32); the topics
(u16 length + UTF-8 each); u32 CRC32 of everything before it. (An
``FMQIDX01`` file, which had no counted sizes, is ignored: the segment is
scanned once and its .idx rewritten.)
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from array import array
from bisect import bisect_left

from flowmq.core.store import records
from flowmq.core.store.files import mapped, write_all

SEGMENT_SUFFIX = ".log"
INDEX_SUFFIX = ".idx"
#: Suffix of a rewrite's temp files (a leftover of a crash is removed at start-up).
REWRITE_SUFFIX = ".compact"
_INDEX_MAGIC = b"FMQIDX02"
_INDEX_HEAD = struct.Struct("<8sQQI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ARRAYS = (("seqs", "Q"), ("offsets", "Q"), ("stamps", "q"), ("sizes", "I"), ("counted", "I"))
#: Bytes of one entry in a .idx: the arrays and its topic number.
_ENTRY_BYTES = sum(array(code).itemsize for _attr, code in _ARRAYS) + 4
_LITTLE = sys.byteorder == "little"


def segment_name(base: int) -> str:
    return "%020d%s" % (base, SEGMENT_SUFFIX)


class Segment:
    """A segment's paths, index arrays and counters.

    ``size`` counts the bytes of its records including those still in the
    store's write buffer; ``written`` the bytes already in the file.
    ``dead_bytes``: bytes of records that are no longer live.
    """

    __slots__ = (
        "base",
        "path",
        "index_path",
        "seqs",
        "offsets",
        "stamps",
        "sizes",
        "counted",
        "topics",
        "live",
        "live_count",
        "dead_bytes",
        "size",
        "written",
        "erasures",
    )

    def __init__(self, directory: str, base: int):
        self.base = base
        self.path = os.path.join(directory, segment_name(base))
        self.index_path = self.path[: -len(SEGMENT_SUFFIX)] + INDEX_SUFFIX
        self.erasures = 0  # bumped by every erase: a rewrite built before one is thrown away
        self.reset()

    def reset(self) -> None:
        self.seqs = array("Q")
        self.offsets = array("Q")
        self.stamps = array("q")
        self.sizes = array("I")
        self.counted = array("I")
        self.topics: list = []
        self.live = bytearray()
        self.live_count = 0
        self.dead_bytes = 0
        self.size = 0
        self.written = 0

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def add(self, seq, offset, timestamp, size, topic, live=True, counted=None) -> None:
        """One more record; ``counted``: the message's counted size (None: ``size``)."""
        self.seqs.append(seq)
        self.offsets.append(offset)
        self.stamps.append(timestamp)
        self.sizes.append(size)
        self.counted.append(size if counted is None else counted)
        self.topics.append(topic)
        self.live.append(1 if live else 0)
        if live:
            self.live_count += 1
        else:
            self.dead_bytes += size + records.SIZE_DELTA

    def position(self, seq: int) -> int:
        """The first entry whose sequence is >= seq (``len(seqs)`` if none)."""
        seqs = self.seqs
        if seqs:
            index = seq - seqs[0]  # entries are consecutive until a compaction
            if 0 <= index < len(seqs) and seqs[index] == seq:
                return index
        return bisect_left(seqs, seq)

    def find(self, seq: int) -> int:
        """The entry of ``seq``, or -1."""
        index = self.position(seq)
        return index if index < len(self.seqs) and self.seqs[index] == seq else -1

    def kill(self, index: int) -> None:
        """Mark an entry no longer live."""
        self.live[index] = 0
        self.live_count -= 1
        self.dead_bytes += self.sizes[index] + records.SIZE_DELTA

    # -- reading the file at start-up --------------------------------------

    def scan(self, last_seq: int, sizer=None):
        """Rebuild the index by reading the file; all entries start live.
        ``sizer``: the store's (None: a message counts as its record).

        Returns ``(stop, file size)``: where valid records end (records must
        be MESSAGE or ERASED with sequences above ``last_seq`` and increasing).
        """
        self.reset()
        with mapped(self.path) as data:
            entries, stop = records.scan(data)
            for offset, rtype, length, seq, timestamp, topic_len, headers_len in entries:
                if seq <= last_seq or rtype not in (records.MESSAGE, records.ERASED):
                    stop = offset
                    break
                last_seq = seq
                if rtype == records.MESSAGE:
                    topic = sys.intern(records.topic_at(data, offset, topic_len))
                    counted = None
                    if sizer is not None:
                        headers, properties = records.meta_at(data, offset, topic_len, headers_len)
                        counted = sizer(topic, headers, properties,
                                        length - records.HEADER_SIZE - topic_len - headers_len)
                    self.add(seq, offset, timestamp, length - records.SIZE_DELTA, topic, counted=counted)
                else:
                    self.add(seq, offset, timestamp, length - records.SIZE_DELTA, "", live=False)
            file_size = len(data)
        self.size = self.written = stop
        return stop, file_size

    # -- the .idx file -----------------------------------------------------

    def write_index(self) -> None:
        """Write the .idx of a sealed segment (temp file, then rename)."""
        temp = self.index_path + ".tmp"
        with open(temp, "wb") as handle:
            handle.write(index_bytes(self.size, self.seqs, self.offsets, self.stamps, self.sizes, self.counted,
                                     self.topics))
        os.replace(temp, self.index_path)

    def read_index(self) -> bool:
        """Load the index from the .idx; False (index untouched) if it is
        missing, damaged or does not describe the .log as it is."""
        try:
            with open(self.index_path, "rb") as handle:
                data = handle.read()
            file_size = os.path.getsize(self.path)
        except OSError:
            return False
        if len(data) < _INDEX_HEAD.size + 4 or zlib.crc32(data[:-4]) != _U32.unpack_from(data, len(data) - 4)[0]:
            return False
        magic, size, count, topic_count = _INDEX_HEAD.unpack_from(data)
        if magic != _INDEX_MAGIC or size != file_size or count * _ENTRY_BYTES + topic_count * 2 > len(data):
            return False
        try:
            loaded, offset = [], _INDEX_HEAD.size
            for code in [code for _attr, code in _ARRAYS] + ["I"]:
                values = array(code)
                end = offset + count * values.itemsize
                values.frombytes(data[offset:end])
                if not _LITTLE:
                    values.byteswap()
                loaded.append(values)
                offset = end
            names = []
            for _ in range(topic_count):
                (length,) = _U16.unpack_from(data, offset)
                names.append(sys.intern(data[offset + 2 : offset + 2 + length].decode("utf-8", "surrogatepass")))
                offset += 2 + length
            topics = [names[number] for number in loaded[len(_ARRAYS)]]
        except (struct.error, ValueError, IndexError):
            return False
        if offset != len(data) - 4:
            return False
        self.reset()
        for (attr, _code), values in zip(_ARRAYS, loaded):
            setattr(self, attr, values)
        self.topics = topics
        self.live = bytearray(b"\x01") * count
        self.live_count = count
        self.size = self.written = size
        return True

    def plan_compaction(self) -> "Rewrite":
        """What a rewrite keeping the live records takes (copied: see Rewrite)."""
        keep = array("I")
        index = self.live.find(1)
        while index >= 0:
            keep.append(index)
            index = self.live.find(1, index + 1)
        return Rewrite(self, keep)

    def finish_compaction(self, plan: "Rewrite") -> bool:
        """Swap in the file that ``plan.build`` made (reactor thread); False
        (temp files removed) if it failed or the segment changed meanwhile."""
        if plan.new_size is None or plan.erasures != self.erasures:
            plan.discard()
            return False
        try:
            os.replace(plan.path + REWRITE_SUFFIX, self.path)
        except OSError:
            plan.discard()
            return False
        try:  # an .idx that does not follow only costs a scan at the next start
            os.replace(plan.index_path + REWRITE_SUFFIX, self.index_path)
        except OSError:
            pass
        keep, live = plan.keep, self.live
        still = bytearray(live[i] for i in keep)  # messages removed while the file was built stay dead
        sizes = plan.sizes
        self.seqs, self.stamps, self.sizes, self.counted = plan.seqs, plan.stamps, sizes, plan.counted
        self.offsets, self.topics, self.live = plan.offsets, plan.topics, still
        self.live_count = still.count(1)
        self.dead_bytes = sum(sizes[i] + records.SIZE_DELTA for i in range(len(keep)) if not still[i])
        self.size = self.written = plan.new_size
        return True

    def remove_files(self) -> None:
        for path in (self.path, self.index_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def index_bytes(size, seqs, offsets, stamps, sizes, counted, topics) -> bytes:
    """The .idx of a segment of ``size`` bytes with these index arrays."""
    numbers: dict = {}
    topic_numbers = array("I", (numbers.setdefault(topic, len(numbers)) for topic in topics))
    parts = [_INDEX_HEAD.pack(_INDEX_MAGIC, size, len(seqs), len(numbers))]
    for values in (seqs, offsets, stamps, sizes, counted, topic_numbers):
        if not _LITTLE:
            values = array(values.typecode, values)
            values.byteswap()
        parts.append(values.tobytes())
    for topic in numbers:
        encoded = topic.encode("utf-8", "surrogatepass")
        parts.append(_U16.pack(len(encoded)))
        parts.append(encoded)
    data = b"".join(parts)
    return data + _U32.pack(zlib.crc32(data))


class Rewrite:
    """A segment's compaction: the live records copied to a new file.

    Made on the reactor thread (the index arrays of the records kept are
    copied, so the segment may change meanwhile), ``build`` runs on a worker
    thread and touches nothing else: it writes ``<segment>.log.compact``
    (fsynced) and ``<segment>.idx.compact``. ``Segment.finish_compaction``
    renames them over the segment's files on the reactor thread, unless an
    erase happened meanwhile (the copy would bring the erased bytes back).
    """

    def __init__(self, segment: Segment, keep: array):
        self.path, self.index_path = segment.path, segment.index_path
        self.erasures = segment.erasures
        self.keep = keep
        self.seqs = array("Q", [segment.seqs[i] for i in keep])
        self.stamps = array("q", [segment.stamps[i] for i in keep])
        self.sizes = array("I", [segment.sizes[i] for i in keep])
        self.counted = array("I", [segment.counted[i] for i in keep])
        self.old_offsets = array("Q", [segment.offsets[i] for i in keep])
        self.topics = [segment.topics[i] for i in keep]
        self.offsets = None
        self.new_size = None  # set by a build that succeeded

    def build(self) -> None:
        with open(self.path, "rb") as handle:
            data = handle.read()
        chunks, offsets, offset = [], array("Q"), 0
        for start, size in zip(self.old_offsets, self.sizes):
            length = size + records.SIZE_DELTA
            chunks.append(data[start : start + length])
            offsets.append(offset)
            offset += length
        fd = os.open(self.path + REWRITE_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, b"".join(chunks))
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(self.index_path + REWRITE_SUFFIX, "wb") as handle:
            handle.write(index_bytes(offset, self.seqs, offsets, self.stamps, self.sizes, self.counted, self.topics))
        self.offsets = offsets
        self.new_size = offset

    def discard(self) -> None:
        for path in (self.path + REWRITE_SUFFIX, self.index_path + REWRITE_SUFFIX):
            try:
                os.unlink(path)
            except OSError:
                pass
