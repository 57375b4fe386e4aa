"""A message store's in-memory indexes: the live sequences of each topic and
of each wildcard filter asked about (base.py keeps them up to date).

``SeqIndex``: sorted sequences in an ``array('Q')`` (8 bytes a message)
with a moving head, so that dropping the oldest is O(1). A removal from
the middle (an ack in a work queue, a delete) would shift the whole tail
of the array (O(n): at a million-message backlog, a millisecond a delete);
instead it is kept aside in a small sorted array (``gone``), which lookups
step over, and all of them are cut out in one pass once there are
``max(CUT_MIN, sqrt(n))`` of them: O(sqrt n) amortised per removal, with
C-level copies.

``TopicSeqs``: one topic's SeqIndex, with the filters that match it.

``FilterTable``: wildcard filter -> ``FilterEntry``, least recently used
first, at most ``MAX_FILTERS`` (one per MQTT session or AMQP binding is
fine: the cost of a lookup does not depend on how many there are). An
entry holds the topics its filter matches (found once, when it is first
asked about; a new topic is checked against the entries that share its
first two levels, or fewer where the filter has a wildcard there), so:

- a filter matching few topics (up to ``MERGE_TOPICS``, the common case of
  a per-session filter) is answered from those topics' indexes: the next
  message is the least of their next ones, the pending count their sum;
  O(MERGE_TOPICS log n) and no memory per message;
- a filter matching more gets a view (a SeqIndex of the merged sequences of its
  topics, kept up to date by appends and removals: O(log n) lookups at 8
  bytes a matching message) while fewer than ``MAX_VIEWS`` are held; the
  others are answered like the few-topic ones, in O(topics) (nats-server
  counts a wildcard's pending messages over its matching subjects too).
  Views are never evicted for another (no rebuild-on-every-lookup cliff);
  one goes with its entry.

Memory is bounded: MAX_FILTERS entries (a reference per matching topic)
and MAX_VIEWS views.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left, insort

from flowmq.core.router import filter_matches
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL

#: Removals kept aside before a SeqIndex cuts them out (at least; sqrt(n) at a large n).
CUT_MIN = 1024
#: Wildcard filters remembered per store.
MAX_FILTERS = 4096
#: A filter matching more topics than this gets a view (if one is free).
MERGE_TOPICS = 8
#: Views (merged SeqIndexes of broad filters) per store.
MAX_VIEWS = 64
#: Leading literal levels by which the entries are found for a new topic.
BUCKET_LEVELS = 2


class SeqIndex:
    """Sorted live sequences (see the module docstring)."""

    __slots__ = ("seqs", "head", "gone")

    def __init__(self, seqs=None):
        self.seqs = array("Q") if seqs is None else seqs
        self.head = 0
        self.gone = None  # array('Q'): removed, still in seqs (sorted); None if none

    def __len__(self):
        return len(self.seqs) - self.head - (len(self.gone) if self.gone else 0)

    def first(self) -> int:
        return self.seqs[self.head]  # the head is never a removed one

    def remove(self, seq: int) -> None:
        seqs, gone = self.seqs, self.gone
        if seqs[self.head] == seq:
            head = self.head + 1
            if gone:  # removed ones now at the head go with it
                count = 0
                while count < len(gone) and seqs[head] == gone[count]:
                    head += 1
                    count += 1
                del gone[:count]
            self.head = head
            # Give the dropped head back now and then (amortised O(1)).
            if head >= 64 and head * 2 >= len(seqs):
                del seqs[:head]
                self.head = 0
            return
        if gone is None:
            gone = self.gone = array("Q")
        insort(gone, seq)
        if len(gone) >= CUT_MIN and len(gone) * len(gone) >= len(seqs):
            self._cut()

    def _cut(self) -> None:
        """Cut the removed sequences out: one pass of C-level copies."""
        seqs, start, kept = self.seqs, self.head, array("Q")
        for seq in self.gone:
            position = bisect_left(seqs, seq, start)
            kept += seqs[start:position]
            start = position + 1
        kept += seqs[start:]
        self.seqs, self.head, self.gone = kept, 0, None

    def next_seq(self, start_seq: int):
        """The first live sequence >= start_seq, or None."""
        seqs, gone = self.seqs, self.gone
        position = bisect_left(seqs, start_seq, self.head)
        if gone and position < len(seqs):
            at = bisect_left(gone, seqs[position])
            while at < len(gone) and position < len(seqs) and gone[at] == seqs[position]:
                position += 1
                at += 1
        return seqs[position] if position < len(seqs) else None

    def count_from(self, start_seq: int) -> int:
        """How many live sequences are >= start_seq."""
        count = len(self.seqs) - bisect_left(self.seqs, start_seq, self.head)
        gone = self.gone
        return count - (len(gone) - bisect_left(gone, start_seq)) if gone else count

    def live(self) -> array:
        """The live sequences (a copy)."""
        if self.gone:
            self._cut()
        return self.seqs[self.head :]

    def newest_first(self):
        """The live sequences, newest first."""
        seqs, gone = self.seqs, self.gone or ()
        at = len(gone) - 1
        for position in range(len(seqs) - 1, self.head - 1, -1):
            seq = seqs[position]
            if at >= 0 and gone[at] == seq:
                at -= 1
                continue
            yield seq

    def clear(self) -> None:
        self.seqs, self.head, self.gone = array("Q"), 0, None


class TopicSeqs(SeqIndex):
    """One topic's live sequences, the FilterEntries that match the topic and
    those among them with a view (appended to with the topic)."""

    __slots__ = ("filters", "views")

    def __init__(self):
        super().__init__()
        self.filters = ()
        self.views = ()


class FilterEntry:
    """A wildcard filter: its pattern, its matching topics (name -> TopicSeqs)
    and its view, a SeqIndex (None: answered from the topics)."""

    __slots__ = ("pattern", "topics", "view", "index")

    def __init__(self, pattern: list):
        self.pattern = pattern
        self.topics: dict = {}
        self.view = None
        #: What answers lookups: the view, the only topic's index, this entry
        #: (merging several topics' indexes) or None (no topic); see ``settle``.
        self.index = None

    def settle(self) -> None:
        """Set ``index`` after the topics or the view changed."""
        if self.view is not None:
            self.index = self.view
        elif len(self.topics) == 1:
            self.index = next(iter(self.topics.values()))
        else:
            self.index = self if self.topics else None

    # Lookups merged over the topics (an entry with several topics and no view).

    def next_seq(self, start_seq: int):
        best = None
        for seqs in self.topics.values():
            seq = seqs.next_seq(start_seq)
            if seq is not None and (best is None or seq < best):
                best = seq
        return best

    def count_from(self, start_seq: int) -> int:
        total = 0
        for seqs in self.topics.values():
            total += seqs.count_from(start_seq)
        return total

    def live(self) -> array:
        merged = array("Q")
        for seqs in self.topics.values():
            merged += seqs.live()
        return array("Q", sorted(merged))

    def newest_first(self):
        return heapq.merge(*(seqs.newest_first() for seqs in self.topics.values()), reverse=True)


class FilterTable:
    """The FilterEntries of one store's wildcard filters (see the module docstring)."""

    def __init__(self, topics: dict):
        self._topics = topics  # the store's topic -> TopicSeqs
        #: filter -> FilterEntry, least recently used first (a lookup moves its entry to the end).
        self.entries: dict = {}
        # The entries by their leading literal levels (up to BUCKET_LEVELS): a
        # new topic is checked against the few buckets it can be in, not all.
        self._buckets: dict = {}  # tuple of levels -> {FilterEntry: None}
        self.views = 0

    def add(self, topic_filter: str) -> FilterEntry:
        """A new entry for a wildcard filter (the least recently used goes past MAX_FILTERS)."""
        entry = self.entries[topic_filter] = self._build(topic_filter)
        return entry

    def _build(self, topic_filter: str) -> FilterEntry:
        if len(self.entries) >= MAX_FILTERS:
            self._evict(self.entries.pop(next(iter(self.entries))))
        entry = FilterEntry(topic_filter.split(SEPARATOR))
        self._buckets.setdefault(_bucket(entry.pattern), {})[entry] = None
        for topic, seqs in self._topics.items():
            if filter_matches(entry.pattern, topic.split(SEPARATOR)):
                entry.topics[topic] = seqs
                seqs.filters += (entry,)
        self._maybe_view(entry)
        entry.settle()
        return entry

    def _maybe_view(self, entry: FilterEntry) -> None:
        if entry.view is None and len(entry.topics) > MERGE_TOPICS and self.views < MAX_VIEWS:
            merged = array("Q")
            for seqs in entry.topics.values():
                merged += seqs.live()
                seqs.views += (entry,)
            entry.view = SeqIndex(array("Q", sorted(merged)))
            self.views += 1

    def _evict(self, entry: FilterEntry) -> None:
        key = _bucket(entry.pattern)
        bucket = self._buckets[key]
        del bucket[entry]
        if not bucket:
            del self._buckets[key]
        for seqs in entry.topics.values():
            seqs.filters = tuple(e for e in seqs.filters if e is not entry)
            if entry.view is not None:
                seqs.views = tuple(e for e in seqs.views if e is not entry)
        if entry.view is not None:
            self.views -= 1

    def topic_added(self, topic: str, seqs: TopicSeqs) -> None:
        """A topic got its first live message."""
        if not self.entries:
            return
        levels = topic.split(SEPARATOR)
        buckets = self._buckets
        candidates = [buckets.get(tuple(levels[:n])) for n in range(min(len(levels), BUCKET_LEVELS) + 1)]
        for entry in [entry for bucket in candidates if bucket for entry in bucket]:
            if filter_matches(entry.pattern, levels):
                entry.topics[topic] = seqs
                seqs.filters += (entry,)
                if entry.view is not None:
                    seqs.views += (entry,)
                else:
                    self._maybe_view(entry)
                entry.settle()

    def topic_removed(self, topic: str, seqs: TopicSeqs) -> None:
        """A topic has no live message left."""
        for entry in seqs.filters:
            del entry.topics[topic]
            entry.settle()

    def clear(self) -> None:
        """Every message went (a purge of everything): the views are emptied."""
        for entry in self.entries.values():
            entry.topics.clear()
            if entry.view is not None:
                entry.view.clear()
            entry.settle()


def _bucket(pattern: list) -> tuple:
    """The leading literal levels of a filter (at most BUCKET_LEVELS)."""
    literal = 0
    while literal < min(len(pattern), BUCKET_LEVELS) and pattern[literal] not in (SINGLE_LEVEL, MULTI_LEVEL):
        literal += 1
    return tuple(pattern[:literal])
