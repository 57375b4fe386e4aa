"""What every message store shares: limits enforcement and per-topic bookkeeping.

``MessageStore`` implements the whole public interface (append with limits,
lookups by filter, delete, purge, expiry, state) on top of a handful of
primitives that each storage provides (``_put``, ``_drop``, ``_load`` ...):
MemoryStore keeps messages in a list, FileStore in segment files. The
bookkeeping here is the same for both:

- ``_topics``: topic -> ``TopicSeqs``, the sorted sequences of the topic's
  live messages. Literal filters are answered from it with bisect.
- ``_filters``: a ``FilterTable`` of the wildcard filters asked about: the
  topics each matches, and for those matching many topics a merged
  view kept up to date by appends and removals (index.py: the
  cost of a lookup stays flat however many filters there are, and memory
  is bounded).
- counters: live messages, live bytes, first and last sequence.

A message's *size*, what it counts toward ``max_bytes`` and the stream's
bytes, is by default its record's (records.py); a protocol that has its
own accounting gives the store a *sizer*, ``sizer(topic, headers,
properties, payload length) -> int``, called once per message as it is appended (and,
for FileStore, when a segment has to be scanned at start-up; the figure is
kept in the segment's index). JetStream's counts as nats-server's does.

Sequences start at 1, grow by one per append and are never reused; the
last a stream can have is ``MAX_SEQ`` (the record codec's width), so an
append past it is refused (LAST_SEQ) and so is a purge that would move the
stream beyond it.
``first_seq`` is the first live sequence, or ``last_seq + 1`` when the
stream is empty (0 for a stream that never had a message). Removals happen
in sequence order wherever a rule removes "the oldest", so that the
per-topic arrays shrink at their heads in O(1).

Messages expire (``max_age``) and drop (discard-old limits) oldest first,
in sequence order, as in nats-server; ``seq_for_time`` assumes timestamps
do not decrease with the sequence (they do not, unless callers pass
explicit timestamps out of order).
"""

from __future__ import annotations

import itertools

import time
from abc import ABC, abstractmethod
from bisect import bisect_left

from flowmq.core.store.datatypes import (
    LAST_SEQ,
    MAX_BYTES,
    MAX_MSG_SIZE,
    MAX_MSGS,
    MAX_MSGS_PER_SUBJECT,
    QUOTA_EXCEEDED,
    LimitExceeded,
    Limits,
    StreamState,
)
from flowmq.core.store.index import FilterTable, TopicSeqs
from flowmq.core.store.records import MAX_SEQ, OVERHEAD, encode_meta
from flowmq.core.topics import MULTI_LEVEL, is_wildcard_filter

class MessageStore(ABC):
    """The store interface; subclasses provide the storage primitives (the
    abstract methods: an incomplete store cannot be made).

    ``on_remove``: None, or ``callable(seq, topic)`` called for every message
    that limits, expiry, delete or purge remove. ``sizer``: see the module
    docstring (None: a message counts as its record).
    ``quota``: None, or the Quota that the store's bytes count in (set with
    ``use_quota``).
    """

    def __init__(self, limits: Limits | None = None, sizer=None):
        self.limits = limits if limits is not None else Limits()
        self.on_remove = None
        self._sizer = sizer
        self.quota = None
        self._topics: dict = {}  # topic -> TopicSeqs
        self._filters = FilterTable(self._topics)
        self._count = 0
        self._bytes = 0
        self._first = 1  # first live seq, or last + 1 when empty
        self._last = 0

    # -- the primitives a storage provides ---------------------------------

    @abstractmethod
    def _put(self, seq, topic, headers, payload, timestamp, topic_b, headers_b, size, properties):
        """Store a new message (``topic_b``/``headers_b``: its encoded topic and
        headers; ``size``: what it counts)."""

    @abstractmethod
    def _drop(self, seq):
        """Forget a live message; return ``(topic, counted size)``, or None if it is not live."""

    @abstractmethod
    def _clear(self):
        """Forget every message at once (purge of everything); ``_first``/``_last`` are set."""

    @abstractmethod
    def _load(self, seq):
        """The live message ``seq`` as a StoredMessage, or None."""

    @abstractmethod
    def _size(self, seq) -> int:
        """The counted size of the live message ``seq``."""

    @abstractmethod
    def _timestamp(self, seq) -> int:
        """The timestamp of the live message ``seq``."""

    @abstractmethod
    def _next_live(self, seq) -> int:
        """The first live sequence >= seq, or ``_last + 1``."""

    @abstractmethod
    def _prev_live(self, seq) -> int:
        """The last live sequence <= seq, or 0."""

    @abstractmethod
    def _iter_live(self, start_seq):
        """Yield ``(seq, topic)`` of the live messages from ``start_seq`` on, in order."""

    @abstractmethod
    def _count_live(self, start_seq) -> int:
        """How many live messages have a sequence >= start_seq (fast: C-level counting)."""

    @abstractmethod
    def _seq_for_time(self, timestamp) -> int:
        """The first sequence (live or not) whose timestamp is >= timestamp, or ``_last + 1``."""

    def _mark_dirty(self):
        """Called after every change (FileStore: there are writes to flush)."""

    # -- appending and limits ----------------------------------------------

    def append(self, topic, headers, payload, timestamp=None, properties=None):
        """Store a message (header values and ``properties`` as a Message has
        them); return ``(seq, timestamp)``. Raises LimitExceeded."""
        limits = self.limits
        if type(payload) is not bytes:
            payload = bytes(payload)
        topic_b = topic.encode("utf-8", "surrogatepass")
        headers = tuple((name, value) for name, value in headers) if headers else None
        if properties is not None and not properties.items():
            properties = None
        headers_b = encode_meta(headers, properties)
        if self._sizer is None:
            size = len(topic_b) + len(headers_b) + len(payload) + OVERHEAD
        else:
            size = self._sizer(topic, headers, properties, len(payload))
        if 0 < limits.max_msg_size < len(headers_b) + len(payload):
            raise LimitExceeded(MAX_MSG_SIZE)
        quota = self.quota
        if quota is not None and 0 <= quota.limit < quota.bytes + size:
            raise LimitExceeded(QUOTA_EXCEEDED)
        seqs = self._topics.get(topic)
        per_subject = limits.max_msgs_per_subject
        at_subject_limit = per_subject > 0 and seqs is not None and len(seqs) >= per_subject
        if at_subject_limit and limits.discard_new_per_subject:
            raise LimitExceeded(MAX_MSGS_PER_SUBJECT)
        if limits.discard_new:
            self._check_discard_new(size, seqs if at_subject_limit else None)
        seq = self._last + 1
        if seq > MAX_SEQ:
            raise LimitExceeded(LAST_SEQ)
        if timestamp is None:
            timestamp = time.time_ns()
        self._put(seq, topic, headers, payload, timestamp, topic_b, headers_b, size, properties)
        self._last = seq
        if not self._count:
            self._first = seq
        self._count += 1
        self._bytes += size
        if quota is not None:
            quota.bytes += size
        if seqs is None:
            seqs = self._topics[topic] = TopicSeqs()
            self._filters.topic_added(topic, seqs)
        seqs.seqs.append(seq)
        for entry in seqs.views:
            entry.view.seqs.append(seq)
        if at_subject_limit:
            while len(seqs) > per_subject:
                self._remove(seqs.first())
        if limits.max_msgs > 0 or limits.max_bytes > 0:
            self._enforce_front()
        self._mark_dirty()
        return seq, timestamp

    def _check_discard_new(self, size, subject_seqs):
        """Raise when the message would pass max_msgs/max_bytes; a message that
        will push out its subject's oldest (``subject_seqs``) adds no message
        and only its difference in bytes."""
        limits = self.limits
        if limits.max_msgs > 0 and self._count >= limits.max_msgs and subject_seqs is None:
            raise LimitExceeded(MAX_MSGS)
        if limits.max_bytes > 0:
            freed = self._size(subject_seqs.first()) if subject_seqs is not None else 0
            if self._bytes + size - freed > limits.max_bytes:
                raise LimitExceeded(MAX_BYTES)

    def _enforce_front(self) -> None:
        """Drop the oldest messages while max_msgs or max_bytes is passed."""
        limits = self.limits
        max_msgs, max_bytes = limits.max_msgs, limits.max_bytes
        while self._count and ((0 < max_msgs < self._count) or (0 < max_bytes < self._bytes)):
            self._remove(self._first)

    def use_quota(self, quota) -> None:
        """Count this store's bytes in ``quota`` from now on (None: in no quota)."""
        if self.quota is not None:
            self.quota.bytes -= self._bytes
        self.quota = quota
        if quota is not None:
            quota.bytes += self._bytes

    def update_limits(self, limits: Limits) -> None:
        """Apply new limits now: count, bytes and per-subject limits drop the
        oldest messages at once; ``max_age`` applies at the next ``expire``."""
        self.limits = limits
        per_subject = limits.max_msgs_per_subject
        if per_subject > 0:
            excess = []
            for seqs in self._topics.values():
                if len(seqs) > per_subject:
                    excess.extend(seqs.live()[: len(seqs) - per_subject])
            excess.sort()
            for seq in excess:
                self._remove(seq)
        self._enforce_front()
        self._mark_dirty()

    def expire(self, now_ns: int) -> int:
        """Drop the messages whose timestamp is at or before ``now_ns - max_age``."""
        max_age = self.limits.max_age
        if max_age <= 0:
            return 0
        cutoff = now_ns - max_age
        removed = 0
        while self._count and self._timestamp(self._first) <= cutoff:
            self._remove(self._first)
            removed += 1
        if removed:
            self._mark_dirty()
        return removed

    # -- removal -----------------------------------------------------------

    def _remove(self, seq) -> bool:
        dropped = self._drop(seq)
        if dropped is None:
            return False
        topic, size = dropped
        self._count -= 1
        self._bytes -= size
        if self.quota is not None:
            self.quota.bytes -= size
        seqs = self._topics[topic]
        seqs.remove(seq)
        for entry in seqs.views:
            entry.view.remove(seq)
        if not len(seqs):
            del self._topics[topic]
            self._filters.topic_removed(topic, seqs)
        if seq == self._first:
            self._first = self._next_live(seq + 1) if self._count else self._last + 1
        on_remove = self.on_remove
        if on_remove is not None:
            on_remove(seq, topic)
        return True

    def delete(self, seq: int, erase: bool = False) -> bool:
        """Remove one message; False if it is not there. ``erase``: also
        overwrite its bytes in storage (see ``_erase``)."""
        if erase and self._load(seq) is not None:
            self._erase(seq)
        removed = self._remove(seq)
        if removed:
            self._mark_dirty()
        return removed

    def _erase(self, seq) -> None:
        """Make the stored bytes of the live message ``seq`` unrecoverable (before ``_drop``)."""

    def purge(self, topic_filter=None, up_to_seq=None, keep=None) -> int:
        """Remove messages; return how many.

        No arguments: everything (then ``first_seq = last_seq + 1``).
        ``topic_filter``: only matching messages. ``up_to_seq``: only those
        with a sequence below it. ``keep``: leave the newest ``keep`` of the
        matching ones. The restrictions combine. Without a filter,
        ``up_to_seq`` beyond ``last_seq + 1`` moves the stream on to it, as
        nats-server's compact does: the next message gets ``up_to_seq``.
        ValueError for an ``up_to_seq`` beyond ``MAX_SEQ`` (nothing changes).
        """
        if up_to_seq and up_to_seq > MAX_SEQ:
            raise ValueError("sequence %d is beyond the last a stream can have (%d)" % (up_to_seq, MAX_SEQ))
        if topic_filter == MULTI_LEVEL:
            topic_filter = None
        keep = keep or 0
        if topic_filter is None and not up_to_seq and not keep:
            return self._purge_all(self._last + 1)
        if topic_filter is None:
            live = self._iter_live(self._first)
            if up_to_seq and not keep:  # only the front: stop there, not at the end of the stream
                live = itertools.takewhile(lambda entry: entry[0] < up_to_seq, live)
            candidates = [seq for seq, _topic in live]
        else:
            index = self._index(topic_filter)
            candidates = list(index.live()) if index is not None else []
        if keep:
            candidates = candidates[: max(0, len(candidates) - keep)]
        if up_to_seq:
            candidates = candidates[: bisect_left(candidates, up_to_seq)]
            if topic_filter is None and not keep and up_to_seq > self._last + 1:
                return self._purge_all(up_to_seq)
        for seq in candidates:
            self._remove(seq)
        if candidates:
            self._mark_dirty()
        return len(candidates)

    def _purge_all(self, first_seq: int) -> int:
        removed = list(self._iter_live(self._first)) if self.on_remove is not None else ()
        count = self._count
        self._last = max(self._last, first_seq - 1)
        self._first = first_seq
        self._clear()
        if self.quota is not None:
            self.quota.bytes -= self._bytes
        self._count = self._bytes = 0
        self._topics.clear()
        self._filters.clear()
        on_remove = self.on_remove
        for seq, topic in removed:
            on_remove(seq, topic)
        self._mark_dirty()
        return count

    # -- lookups -----------------------------------------------------------

    def get(self, seq: int):
        """The live message ``seq`` as a StoredMessage, or None."""
        return self._load(seq)

    def _entry(self, topic_filter):
        """The FilterEntry of a wildcard filter (made now if it has none); None for a literal one."""
        entries = self._filters.entries
        entry = entries.pop(topic_filter, None)  # a wildcard asked about before (the common case) ...
        if entry is not None:
            entries[topic_filter] = entry  # ... now the most recently used
        elif ("+" in topic_filter or "#" in topic_filter) and is_wildcard_filter(topic_filter):
            entry = self._filters.add(topic_filter)
        return entry

    def _index(self, topic_filter):
        """What answers for a filter: a SeqIndex (the topic's, a wildcard's
        view or its only topic's), a FilterEntry (merging its topics), or
        None when no live message matches."""
        entry = self._entry(topic_filter)
        return self._topics.get(topic_filter) if entry is None else entry.index

    def next_message(self, start_seq: int, topic_filter=None):
        """The first live message with seq >= start_seq matching the filter, or None."""
        if topic_filter == MULTI_LEVEL:
            topic_filter = None
        while True:
            seq = self._next_seq(max(start_seq, self._first), topic_filter)
            if seq is None:
                return None
            message = self._load(seq)
            if message is not None:
                return message
            start_seq = seq + 1  # unreadable (FileStore logged it): go on past it

    def messages_from(self, start_seq: int = 1):
        """The live messages from ``start_seq`` on, in order, each read when
        the one before has been taken (so deleting as it goes is safe)."""
        seq = start_seq
        while True:
            stored = self.next_message(seq)
            if stored is None:
                return
            seq = stored.seq + 1
            yield stored

    def _next_seq(self, start_seq, topic_filter):
        if start_seq > self._last:
            return None
        if topic_filter is None:
            seq = self._next_live(start_seq)
            return seq if seq <= self._last else None
        index = self._index(topic_filter)
        return index.next_seq(start_seq) if index is not None else None

    def last_message(self, topic_filter=None):
        """The newest live message matching the filter, or None."""
        if topic_filter == MULTI_LEVEL:
            topic_filter = None
        if not self._count:
            return None
        if topic_filter is None:
            return self._load(self._prev_live(self._last))
        index = self._index(topic_filter)
        if index is None:
            return None
        for seq in index.newest_first():
            message = self._load(seq)
            if message is not None:
                return message
        return None

    def seq_for_time(self, timestamp: int) -> int:
        """The first live seq with a timestamp >= ``timestamp``, or last_seq + 1."""
        seq = max(self._seq_for_time(timestamp), self._first)
        return self._next_live(seq) if seq <= self._last else self._last + 1

    def count_pending(self, start_seq: int, topic_filter=None) -> int:
        """How many live messages with seq >= start_seq match the filter."""
        if topic_filter == MULTI_LEVEL:
            topic_filter = None
        if start_seq > self._last or not self._count:
            return 0
        if topic_filter is None:
            if start_seq <= self._first:
                return self._count
            if self._last - self._first + 1 == self._count:  # no gaps
                return self._last - start_seq + 1
            return self._count_live(start_seq)
        index = self._index(topic_filter)
        return index.count_from(start_seq) if index is not None else 0

    def topics(self, topic_filter=None) -> dict:
        """Topic -> number of live messages, for the topics matching the filter."""
        if topic_filter is None or topic_filter == MULTI_LEVEL:
            return {topic: len(seqs) for topic, seqs in self._topics.items()}
        entry = self._entry(topic_filter)
        if entry is not None:
            return {topic: len(seqs) for topic, seqs in entry.topics.items()}
        seqs = self._topics.get(topic_filter)
        return {topic_filter: len(seqs)} if seqs is not None else {}

    def state(self) -> StreamState:
        count = self._count
        return StreamState(
            messages=count,
            bytes=self._bytes,
            first_seq=self._first if (self._last or self._first > 1) else 0,
            first_timestamp=self._timestamp(self._first) if count else 0,
            last_seq=self._last,
            last_timestamp=self._timestamp(self._prev_live(self._last)) if count else 0,
            num_deleted=(self._last - self._first + 1 - count) if count else 0,
            num_subjects=len(self._topics),
        )

    # -- durability (meaningful for FileStore) -------------------------------

    def flush(self) -> None:
        """Write buffered changes to the OS."""

    def sync(self) -> None:
        """Flush, then make the writes durable."""

    def compact(self) -> None:
        """Reclaim the space of removed messages."""

    def close(self) -> None:
        """Flush and release resources; the store is unusable afterwards."""
