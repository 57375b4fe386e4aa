"""The cursor: where a consumer is in a log, and what it still has to read.

A cursor reads a message store (flowmq/core/store) through topic filters
(None: every topic). It starts at one of the start positions below and then
gives the messages it wants, in sequence order, one ``next()`` at a time.
The "last per topic" start first gives the newest message of each wanted
topic (in sequence order), then what comes after.

``num_pending`` (messages not yet read) is asked for on every delivery (a
NATS ack subject carries it), so it is kept up to date by appends, reads and
removals instead of being counted each time: counting over a wildcard
filter visits every matching topic.
"""

from __future__ import annotations

import bisect

from flowmq.core.router import filter_matches
from flowmq.core.topics import SEPARATOR

#: Start positions (nats-server's deliver policies; AMQP streams' and Kafka's offsets).
ALL = "all"  # the first message the log holds
NEW = "new"  # what is appended from now on
LAST = "last"  # the newest wanted message, then what comes
BY_SEQ = "by_seq"  # a sequence (Kafka's offset)
BY_TIME = "by_time"  # the first message stored at or after a time
LAST_PER_TOPIC = "last_per_topic"  # the newest of each wanted topic, then what comes
START_POSITIONS = (ALL, NEW, LAST, BY_SEQ, BY_TIME, LAST_PER_TOPIC)


class Cursor:
    """A read position in one store, through topic filters."""

    def __init__(self, store, filters=None):
        self.store = store
        self.next_seq = 1
        # A last-per-topic start: the seqs to give first (sorted), and how many
        # went; a list, so that "is it still to come" is a bisect.
        self._first_seqs: list = []
        self._first_sent = 0
        self._from_first = False  # where the last next() came from
        self._log_pending = None  # wanted messages from next_seq on; None: count again
        self.set_filters(filters)

    def set_filters(self, filters) -> None:
        """``filters``: topic filters, or None for every topic."""
        self.filters = list(filters) if filters is not None else None
        self._levels = None if filters is None else [f.split(SEPARATOR) for f in filters]
        self._log_pending = None

    def wants(self, topic: str) -> bool:
        if self._levels is None:
            return True
        levels = topic.split(SEPARATOR)
        return any(filter_matches(pattern, levels) for pattern in self._levels)

    # -- start --------------------------------------------------------------------

    def start(self, position: str, seq: int = 0, timestamp: int = 0) -> None:
        """Start at ``position`` (one of START_POSITIONS); ``seq`` for BY_SEQ,
        ``timestamp`` (ns since the epoch) for BY_TIME."""
        state = self.store.state()
        self._first_seqs, self._first_sent = [], 0
        if position == ALL:
            self.next_seq = max(state.first_seq, 1)
        elif position == NEW:
            self.next_seq = state.last_seq + 1
        elif position == LAST:
            newest = self._last_stored()
            self.next_seq = newest.seq if newest is not None else state.last_seq + 1
        elif position == BY_SEQ:
            self.next_seq = seq
        elif position == BY_TIME:
            self.next_seq = self.store.seq_for_time(timestamp)
        elif position == LAST_PER_TOPIC:
            self._first_seqs = sorted(
                stored.seq for topic_filter in (self.filters or [None])
                for stored in self._newest_per_topic(topic_filter))
            self.next_seq = state.last_seq + 1
        else:
            raise ValueError("unknown start position %r" % (position,))
        self._log_pending = None

    def _newest_per_topic(self, topic_filter):
        for topic in self.store.topics(topic_filter):
            stored = self.store.last_message(topic)
            if stored is not None:
                yield stored

    def _last_stored(self):
        newest = None
        for topic_filter in (self.filters or [None]):
            stored = self.store.last_message(topic_filter)
            if stored is not None and (newest is None or stored.seq > newest.seq):
                newest = stored
        return newest

    # -- reading ------------------------------------------------------------------

    def next(self):
        """The next wanted stored message (the cursor moves past it), or None."""
        first = self._first_seqs
        while self._first_sent < len(first):
            stored = self.store.get(first[self._first_sent])
            self._first_sent += 1
            if stored is not None:
                self._from_first = True
                return stored
        if first:  # all given: let the list go
            self._first_seqs, self._first_sent = [], 0
        self._from_first = False
        stored = self._next_stored(self.next_seq)
        if stored is None:
            return None
        self.next_seq = stored.seq + 1
        if self._log_pending is not None:
            self._log_pending -= 1
        return stored

    def unread(self, stored) -> None:
        """Give back what ``next`` just returned: it comes again next time."""
        if self._from_first:
            self._first_sent -= 1
        else:
            self.next_seq = stored.seq
            if self._log_pending is not None:
                self._log_pending += 1

    def _next_stored(self, start: int):
        if self.filters is None:
            return self.store.next_message(start)
        found = None
        for topic_filter in self.filters:
            stored = self.store.next_message(start, topic_filter)
            if stored is not None and (found is None or stored.seq < found.seq):
                found = stored
        return found

    def has_read(self, seq: int) -> bool:
        """Has the cursor gone past ``seq`` (read it, or skipped it as unwanted)?"""
        return seq < self.next_seq and not self._still_to_give(seq)

    def _still_to_give(self, seq: int) -> bool:
        first = self._first_seqs
        index = bisect.bisect_left(first, seq, self._first_sent)
        return index < len(first) and first[index] == seq

    def first_left(self) -> list:
        """The last-per-topic seqs not given yet."""
        return self._first_seqs[self._first_sent:]

    def first_left_count(self) -> int:
        return len(self._first_seqs) - self._first_sent

    def num_pending(self) -> int:
        """Wanted messages not read yet."""
        if self._log_pending is None:
            if self.filters is None:
                self._log_pending = self.store.count_pending(self.next_seq)
            else:
                self._log_pending = sum(self.store.count_pending(self.next_seq, f) for f in self.filters)
        return len(self._first_seqs) - self._first_sent + self._log_pending

    # -- the log changed ------------------------------------------------------------

    def appended(self, topic: str) -> None:
        if self._log_pending is not None and self.wants(topic):
            self._log_pending += 1

    def removed(self, seq: int, topic: str) -> None:
        if self._log_pending is not None and seq >= self.next_seq and self.wants(topic):
            self._log_pending -= 1

    def skip_to(self, first: int) -> None:
        """The log now starts at ``first`` (a purge): move up to it."""
        if self.next_seq < first:
            self.next_seq = first
        self._log_pending = None

    # -- persistence ----------------------------------------------------------------

    def restore(self, next_seq: int, first_left=()) -> None:
        self.next_seq = next_seq
        self._first_seqs, self._first_sent = list(first_left), 0
        self._log_pending = None
