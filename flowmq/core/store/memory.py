"""MemoryStore: the message store of streams with ``storage=memory``.

Messages live in a list indexed by ``seq - base`` (None where one was
removed) beside an array of their timestamps for ``seq_for_time``; the
removed head of the list is cut off now and then as the stream moves on.
Nothing survives the process; ``flush``/``sync``/``compact`` do nothing.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

from flowmq.core.store.base import MessageStore
from flowmq.core.store.datatypes import StoredMessage

#: Cut the removed head off the list once it is this long and half the list.
_TRIM = 1024


class MemoryStore(MessageStore):
    """A MessageStore in memory (see base.MessageStore for the interface)."""

    def __init__(self, limits=None, sizer=None):
        super().__init__(limits, sizer)
        self._slots: list = []  # StoredMessage or None; index = seq - _base
        self._stamps = array("q")  # timestamp of each slot, removed or not
        self._base = 1  # invariant: _base + len(_slots) == _last + 1

    def _put(self, seq, topic, headers, payload, timestamp, topic_b, headers_b, size, properties):
        dead = self._first - self._base if self._count else len(self._slots)
        if dead >= _TRIM and dead * 2 >= len(self._slots):
            del self._slots[:dead]
            del self._stamps[:dead]
            self._base += dead
        self._slots.append(StoredMessage(seq, topic, headers, payload, timestamp, size, properties))
        self._stamps.append(timestamp)

    def _drop(self, seq):
        index = seq - self._base
        if index < 0 or index >= len(self._slots):
            return None
        message = self._slots[index]
        if message is None:
            return None
        self._slots[index] = None
        return message.topic, message.size

    def _clear(self):
        self._slots = []
        self._stamps = array("q")
        self._base = self._first

    def _load(self, seq):
        index = seq - self._base
        if 0 <= index < len(self._slots):
            return self._slots[index]
        return None

    def _size(self, seq):
        return self._slots[seq - self._base].size

    def _timestamp(self, seq):
        return self._stamps[seq - self._base]

    def _next_live(self, seq):
        slots = self._slots
        index = max(seq - self._base, 0)
        while index < len(slots) and slots[index] is None:
            index += 1
        return self._base + index

    def _prev_live(self, seq):
        slots = self._slots
        index = min(seq - self._base, len(slots) - 1)
        while index >= 0 and slots[index] is None:
            index -= 1
        return self._base + index if index >= 0 else 0

    def _iter_live(self, start_seq):
        slots = self._slots
        for index in range(max(start_seq - self._base, 0), len(slots)):
            message = slots[index]
            if message is not None:
                yield message.seq, message.topic

    def _count_live(self, start_seq):
        tail = self._slots[max(start_seq - self._base, 0) :]
        return len(tail) - tail.count(None)

    def _seq_for_time(self, timestamp):
        return self._base + bisect_left(self._stamps, timestamp)
