"""FileStore: a stream kept in an append-only, segmented log on disk.

Layout of a stream's directory::

    00000000000000000001.log   segment: records back to back (records.py)
    00000000000000000001.idx   its index, written when it is sealed (segment.py)
    00000000000000052001.log   the active segment (always the last one)
    tombstones.log             removals (tombstones.py)

Writing: ``append`` encodes the record into one write buffer and indexes it
in memory; ``flush`` hands the buffer to the OS with one write() (and the
new removals with one more, to the tombstone file). What an fsync must make
durable is kept as a set of paths (segments written, the tombstone file,
the directory when a file came or went); ``take_unsynced`` hands them over
for an fsync by path on another thread (and ``give_back`` takes them back
when that failed); ``sync`` does both at once.
When the active segment reaches ``segment_bytes`` it is sealed (its .idx
written) and a new one named after the next sequence is started. A segment
whose messages are all gone is unlinked at once; compaction rewrites
segments that are mostly dead, and the tombstone file when it has grown
past twice a snapshot, in three steps so that the slow part can run on a
worker thread (the engine's DiskWorker): ``plan_compaction`` (reactor
thread: what to keep, copied), ``CompactionPlan.build`` (worker thread: the
new files, fsynced) and ``finish_compaction`` (reactor thread: rename them
over the old ones and adopt their index). ``compact`` runs the three at
once. The active segment is never unlinked
without a new one being created first, and its name is one more than the
last sequence at creation, so ``last_seq`` survives even a purge of
everything.

Reading: the most recent messages are served from a small cache, messages
still in the write buffer from the buffer, others with os.pread (which
leaves the write position alone). Every record read is checked against its
CRC; one that fails is logged and treated as missing, never served.

Open files: a FileStore keeps one descriptor, its active segment's. A
sealed segment is opened for each read-ahead block read from it (one open
per ``READ_AHEAD_BYTES`` for a reader going forward), the tombstone file
for each write, so the broker's open files grow by one per file stream
(the storage engine bounds the number of file streams by that).

Recovery at open: each sealed segment is loaded from its .idx when that
matches, else scanned (and its .idx rewritten); the active one is always
scanned. A scan stops at the first byte that is not a valid record (bad
CRC, bad length, partial record, sequence out of order); the file is
truncated there and one warning names the file, the offset and the bytes
dropped. A later segment keeps its own valid records. Then the tombstone
file is applied. ``last_seq`` is the highest sequence that any segment,
segment name or tombstone mentions, so sequences are not reused even when
a torn tail took the newest messages away.
"""

from __future__ import annotations

import os
import re
import sys
from array import array
from bisect import bisect_left, bisect_right

from flowmq.core.store import records
from flowmq.core.store.base import MessageStore
from flowmq.core.store.index import TopicSeqs
from flowmq.core.store.datatypes import StoredMessage
from flowmq.core.store.files import fsync_path, log, truncate_torn_tail, write_all
from flowmq.core.store.segment import REWRITE_SUFFIX, Segment
from flowmq.core.store.tombstones import TombstoneLog

_SEGMENT_FILE = re.compile(r"^(\d{20})\.log$")
#: The cache of recent messages: at most this many, and this many bytes.
CACHE_MSGS = 1024
CACHE_BYTES = 4 << 20
#: Bytes read at once from a segment for a reader going forward.
READ_AHEAD_BYTES = 64 << 10
#: compact() rewrites a sealed segment when this share of its bytes is dead.
COMPACT_DEAD_SHARE = 0.25
#: Compaction rewrites the tombstone file when larger than this and than twice a snapshot.
TOMBSTONES_REWRITE_BYTES = 64 << 10


class FileStore(MessageStore):
    """A MessageStore on disk (see base.MessageStore for the interface).

    ``on_dirty``: None or ``callable(store)``, called at the first change
    after each flush (the engine's cue to schedule ``flush_all``).
    ``sizer``: see base.MessageStore.
    """

    def __init__(self, directory, limits=None, name=None, segment_bytes=64 << 20, on_dirty=None, sizer=None):
        super().__init__(limits, sizer)
        self.directory = directory
        self.name = name if name is not None else os.path.basename(directory)
        self.segment_bytes = segment_bytes
        self._on_dirty = on_dirty
        self._dirty = False
        self._closed = False
        self._segments: list = []
        self._bases: list = []  # each segment's base, for bisect
        self._active = None
        self._fd = -1  # the active segment's descriptor
        self._buf = bytearray()  # records of the active segment not yet written
        self._cache: dict = {}  # seq -> StoredMessage, the newest appends
        self._cache_low = 1  # no cached seq is below this
        self._cache_bytes = 0
        self._block = None  # (segment, offset, bytes): the last read-ahead block
        self._pending = array("Q")  # removed since the last flush
        self._unsynced: set = set()  # paths written since the last sync (the directory: a file came or went)
        self._compacting = None  # the CompactionPlan being built
        os.makedirs(directory, exist_ok=True)
        self._tombstones = TombstoneLog(directory, self.name)
        self._recover()

    # -- recovery ------------------------------------------------------------

    def _recover(self) -> None:
        for entry in os.listdir(self.directory):
            if entry.endswith(REWRITE_SUFFIX):  # a compaction that a crash cut short
                os.unlink(os.path.join(self.directory, entry))
        first_mark, deleted, highest = self._tombstones.load()
        bases = sorted(int(m.group(1)) for m in map(_SEGMENT_FILE.match, os.listdir(self.directory)) if m)
        last = 0
        for position, base in enumerate(bases):
            segment = Segment(self.directory, base)
            sealed = position < len(bases) - 1
            if not (sealed and segment.read_index() and (not segment.seqs or segment.seqs[0] > last)):
                stop, file_size = segment.scan(last, self._sizer)
                if stop < file_size:
                    truncate_torn_tail(self.name, segment.path, "segment", stop, file_size)
                if sealed:
                    segment.write_index()
            if segment.seqs:
                last = segment.seqs[-1]
            self._segments.append(segment)
            self._bases.append(base)
        for segment in self._segments:
            for index in range(bisect_left(segment.seqs, first_mark)):
                if segment.live[index]:
                    segment.kill(index)
        for seq in deleted:
            segment, index = self._locate(seq)
            if segment is not None and segment.live[index]:
                segment.kill(index)
        self._last = max(last, bases[-1] - 1 if bases else 0, first_mark - 1, highest)
        self._rebuild_topics()
        self._first = self._next_live(0) if self._count else self._last + 1
        self._cache_low = self._last + 1
        for segment in self._segments[:-1]:
            if not segment.live_count:
                self._retire(segment)
        if not self._segments:
            self._start_segment()
        else:
            self._open_active(self._segments[-1])
            if self._active.seqs and not self._active.live_count:
                self._retire(self._active)

    def _rebuild_topics(self) -> None:
        topics = self._topics
        for segment in self._segments:
            seqs, names, counted, live = segment.seqs, segment.topics, segment.counted, segment.live
            index = live.find(1)
            while index >= 0:
                entry = topics.get(names[index])
                if entry is None:
                    entry = topics[names[index]] = TopicSeqs()
                entry.seqs.append(seqs[index])
                self._bytes += counted[index]
                index = live.find(1, index + 1)
            self._count += segment.live_count

    # -- segments --------------------------------------------------------------

    def _open_active(self, segment) -> None:
        self._active = segment
        self._fd = os.open(segment.path, os.O_RDWR | os.O_CREAT, 0o644)
        os.lseek(self._fd, 0, os.SEEK_END)

    def _start_segment(self) -> None:
        """Make a new, empty active segment named after the next sequence."""
        if self._active is not None:
            os.close(self._fd)
        segment = Segment(self.directory, self._last + 1)
        self._segments.append(segment)
        self._bases.append(segment.base)
        self._open_active(segment)
        self._unsynced.add(self.directory)

    def _roll(self) -> None:
        """Seal the active segment (write its buffer and .idx), start the next."""
        self._write_buffer()
        self._active.write_index()
        self._start_segment()

    def _retire(self, segment) -> None:
        """Unlink a segment whose messages are all gone."""
        if segment is self._active:
            self._buf = bytearray()
            self._start_segment()
        position = self._segments.index(segment)
        del self._segments[position]
        del self._bases[position]
        self._unsynced.discard(segment.path)
        segment.remove_files()
        self._unsynced.add(self.directory)

    def _locate(self, seq):
        """``(segment, entry)`` of ``seq``, or ``(None, -1)``."""
        position = bisect_right(self._bases, seq) - 1
        if position < 0:
            return None, -1
        segment = self._segments[position]
        index = segment.find(seq)
        return (segment, index) if index >= 0 else (None, -1)

    def _write_buffer(self) -> None:
        if self._buf:
            try:
                write_all(self._fd, self._buf)
            except OSError:
                # Disk full or failing: cut a partial write off again, so that
                # the buffer can be retried whole and the file stays valid.
                os.ftruncate(self._fd, self._active.written)
                os.lseek(self._fd, self._active.written, os.SEEK_SET)
                raise
            self._active.written += len(self._buf)
            self._buf = bytearray()
            self._unsynced.add(self._active.path)

    # -- the storage primitives ------------------------------------------------

    def _put(self, seq, topic, headers, payload, timestamp, topic_b, headers_b, size, properties):
        if self._closed:
            raise ValueError("stream %s: the store is closed" % (self.name,))
        active = self._active
        if active.size >= self.segment_bytes and active.seqs:
            self._roll()
            active = self._active
        record = records.encode_message(seq, timestamp, topic_b, headers_b, payload)
        offset = active.size
        self._buf += record
        active.size = offset + len(record)
        topic = sys.intern(topic)
        active.add(seq, offset, timestamp, len(record) - records.SIZE_DELTA, topic, counted=size)
        cache = self._cache
        cache[seq] = StoredMessage(seq, topic, headers, payload, timestamp, size, properties)
        self._cache_bytes += size
        while seq - self._cache_low >= CACHE_MSGS or self._cache_bytes > CACHE_BYTES:
            old = cache.pop(self._cache_low, None)
            self._cache_low += 1
            if old is not None:
                self._cache_bytes -= old.size

    def _drop(self, seq):
        segment, index = self._locate(seq)
        if segment is None or not segment.live[index]:
            return None
        segment.kill(index)
        self._pending.append(seq)
        cached = self._cache.pop(seq, None)
        if cached is not None:
            self._cache_bytes -= cached.size
        dropped = segment.topics[index], segment.counted[index]
        if not segment.live_count:
            self._retire(segment)
        return dropped

    def _clear(self):
        self._block = None
        self._cache.clear()
        self._cache_bytes = 0
        self._cache_low = self._last + 1
        self._pending = array("Q")
        old = list(self._segments)
        self._buf = bytearray()
        if self._active.seqs or self._active.base != self._last + 1:
            self._start_segment()
        for segment in old:
            if segment is not self._active:
                self._retire(segment)

    def _erase(self, seq):
        self._block = None
        segment, index = self._locate(seq)
        segment.erasures += 1
        offset, length = segment.offsets[index], segment.sizes[index] + records.SIZE_DELTA
        erased = records.encode_erased(seq, segment.stamps[index], length)
        if segment is self._active and offset >= segment.written:
            start = offset - segment.written
            self._buf[start : start + length] = erased
            return
        fd = self._fd if segment is self._active else os.open(segment.path, os.O_WRONLY)
        try:
            os.pwrite(fd, erased, offset)  # the active fd has no O_APPEND, so this lands at offset
        finally:
            if fd != self._fd:
                os.close(fd)
        self._unsynced.add(segment.path)

    def _load(self, seq):
        message = self._cache.get(seq)
        if message is not None:
            return message
        segment, index = self._locate(seq)
        if segment is None or not segment.live[index]:
            return None
        offset, length = segment.offsets[index], segment.sizes[index] + records.SIZE_DELTA
        if segment is self._active and offset >= segment.written:
            start = offset - segment.written
            data = bytes(self._buf[start : start + length])
        else:
            data = self._read(segment, offset, length)
        record = records.decode_message(data)
        if record is None or record.seq != seq:
            log.error(
                "stream {stream}: segment {file}: message {seq} at offset {offset} is unreadable (corrupt); skipped",
                stream=self.name,
                file=segment.name,
                seq=seq,
                offset=offset,
            )
            return None
        return StoredMessage(seq, record.topic, record.headers, record.payload, record.timestamp,
                             segment.counted[index], record.properties)

    def _read(self, segment, offset: int, length: int) -> bytes:
        """A record's bytes from disk. A reader going forward (a consumer
        catching up) is served from one read-ahead block instead of a pread
        per message; rewriting or erasing drops the block."""
        block = self._block
        if block is not None and block[0] is segment:
            start = offset - block[1]
            if 0 <= start and start + length <= len(block[2]):
                return block[2][start : start + length]
        size = max(length, READ_AHEAD_BYTES)
        if segment is self._active:
            data = os.pread(self._fd, size, offset)
        else:
            fd = os.open(segment.path, os.O_RDONLY)
            try:
                data = os.pread(fd, size, offset)
            finally:
                os.close(fd)
        self._block = (segment, offset, data)
        return data[:length]

    def _size(self, seq):
        segment, index = self._locate(seq)
        return segment.counted[index]

    def _timestamp(self, seq):
        segment, index = self._locate(seq)
        return segment.stamps[index]

    def _segments_from(self, seq):
        """The segments that may hold ``seq`` or later ones (no copy of the list)."""
        segments = self._segments
        return (segments[i] for i in range(max(bisect_right(self._bases, seq) - 1, 0), len(segments)))

    def _next_live(self, seq):
        segments = self._segments
        for position in range(max(bisect_right(self._bases, seq) - 1, 0), len(segments)):
            segment = segments[position]
            seqs = segment.seqs
            if seqs and seqs[-1] >= seq:
                index = segment.live.find(1, segment.position(seq))
                if index >= 0:
                    return seqs[index]
        return self._last + 1

    def _prev_live(self, seq):
        for position in range(bisect_right(self._bases, seq) - 1, -1, -1):
            segment = self._segments[position]
            index = segment.live.rfind(1, 0, bisect_right(segment.seqs, seq))
            if index >= 0:
                return segment.seqs[index]
        return 0

    def _iter_live(self, start_seq):
        for segment in self._segments_from(start_seq):
            seqs, topics, live = segment.seqs, segment.topics, segment.live
            index = live.find(1, segment.position(start_seq))
            while index >= 0:
                yield seqs[index], topics[index]
                index = live.find(1, index + 1)

    def _count_live(self, start_seq):
        return sum(
            segment.live.count(1, bisect_left(segment.seqs, start_seq)) for segment in self._segments_from(start_seq)
        )

    def _seq_for_time(self, timestamp):
        for segment in self._segments:
            if segment.stamps and segment.stamps[-1] >= timestamp:
                return segment.seqs[bisect_left(segment.stamps, timestamp)]
        return self._last + 1

    def _mark_dirty(self):
        if not self._dirty:
            self._dirty = True
            if self._on_dirty is not None:
                self._on_dirty(self)

    # -- durability ------------------------------------------------------------

    def flush(self) -> None:
        """One write() of the buffered records, one of the new removals."""
        if self._closed:
            return
        self._write_buffer()
        first = self._first
        if self._tombstones.append(first, [seq for seq in self._pending if seq >= first]):
            self._unsynced.add(self._tombstones.path)
        self._pending = array("Q")
        self._dirty = False

    def take_unsynced(self) -> list:
        """Flush; then the paths to fsync for everything written so far (files
        before directories). The store forgets them: the caller fsyncs them,
        or gives them back (``give_back``) if that failed."""
        if self._closed:
            return []
        self.flush()
        paths = sorted(self._unsynced, key=len, reverse=True)
        self._unsynced = set()
        return paths

    def give_back(self, paths) -> None:
        """Paths whose fsync failed: the next sync tries them again."""
        if not self._closed:
            self._unsynced.update(paths)

    def sync(self) -> None:
        """Flush, then fsync what was written since the last sync (on this thread)."""
        paths = self.take_unsynced()
        for position, path in enumerate(paths):
            try:
                fsync_path(path)
            except FileNotFoundError:
                pass  # unlinked since (a segment whose messages all went)
            except OSError:
                self.give_back(paths[position:])
                raise

    def _removed_in_segments(self) -> array:
        """The removed sequences from first_seq on that segments still hold."""
        removed = array("Q")
        for segment in self._segments_from(self._first):
            seqs, live = segment.seqs, segment.live
            index = live.find(0, segment.position(self._first))
            while index >= 0:
                removed.append(seqs[index])
                index = live.find(0, index + 1)
        return removed

    def _snapshot_size(self) -> int:
        """The bytes a rewritten tombstone file would have."""
        dead = 0
        for segment in self._segments_from(self._first):
            start = segment.position(self._first)
            dead += len(segment.seqs) - start - segment.live.count(1, start)
        return 2 * records.HEADER_SIZE + 8 * dead

    def plan_compaction(self):
        """A CompactionPlan of the segments whose dead share passes
        COMPACT_DEAD_SHARE (sealing the active one first if it qualifies) and
        of the tombstone file if it is larger than TOMBSTONES_REWRITE_BYTES
        and twice a snapshot; None if there is nothing to do (or a plan is
        being built)."""
        if self._closed or self._compacting is not None:
            return None
        self.flush()
        active = self._active
        if active.seqs and active.dead_bytes >= active.size * COMPACT_DEAD_SHARE:
            self._roll()
        rewrites = [segment.plan_compaction() for segment in self._segments[:-1]
                    if segment.dead_bytes and segment.dead_bytes >= segment.size * COMPACT_DEAD_SHARE]
        tombstones = None
        size = self._tombstones.size
        if size > TOMBSTONES_REWRITE_BYTES and size > 2 * self._snapshot_size():
            tombstones = self._tombstones.plan_rewrite(self._first, self._removed_in_segments())
        if not rewrites and tombstones is None:
            return None
        self._compacting = CompactionPlan(self, rewrites, tombstones)
        return self._compacting

    def finish_compaction(self, plan) -> None:
        """Adopt what ``plan.build`` made (reactor thread): each segment file
        that is still wanted, and the tombstone snapshot."""
        self._compacting = None
        self._block = None
        changed = False
        for rewrite in plan.rewrites:
            segment = next((s for s in self._segments if s.path == rewrite.path), None)
            if self._closed or segment is None:
                rewrite.discard()
            elif segment.finish_compaction(rewrite):
                changed = True
        if plan.tombstones is not None:
            if self._tombstones.finish_rewrite(plan.tombstones, plan.tombstones_built and not self._closed):
                self._unsynced.add(self._tombstones.path)
                changed = True
        if changed and not self._closed:
            self._unsynced.add(self.directory)

    def compact(self) -> None:
        """Run a compaction now, on this thread."""
        plan = self.plan_compaction()
        if plan is not None:
            plan.build()
            self.finish_compaction(plan)

    def close(self) -> None:
        """Sync and release the files; the store is unusable afterwards."""
        if self._closed:
            return
        self.sync()
        self._closed = True
        os.close(self._fd)

    def discard(self) -> None:
        """Release the files without writing anything more (their directory is being removed)."""
        if not self._closed:
            self._closed = True
            os.close(self._fd)


class CompactionPlan:
    """One store's compaction: segment Rewrites and a tombstone snapshot
    (bytes). ``build`` runs on any thread: it touches only the copies and
    the new files; a failure is kept (``errors``) for the reactor thread to
    log, and costs only the file it hit."""

    def __init__(self, store: FileStore, rewrites: list, tombstones):
        self.name = store.name
        self.rewrites = rewrites
        self.tombstones = tombstones
        self._tombstone_log = store._tombstones
        self.tombstones_built = False
        self.errors: list = []

    def build(self) -> None:
        for rewrite in self.rewrites:
            try:
                rewrite.build()
            except OSError as error:
                self.errors.append((rewrite.path, error))
        if self.tombstones is not None:
            try:
                self._tombstone_log.build_rewrite(self.tombstones)
                self.tombstones_built = True
            except OSError as error:
                self.errors.append((self._tombstone_log.path, error))
