"""The acknowledgement tracker: what a consumer delivered and still awaits.

Each delivered message (by its log sequence) is *pending* until it is
acknowledged, terminated, or runs out of deliveries. A pending message has
a deadline: its ack wait (or the backoff step for its delivery count) from
its delivery, moved by an in-progress signal, or set by a negative
acknowledgement with a delay. When a deadline passes the message is queued
for redelivery, unless it has been delivered ``max_deliver`` times: then it
is forgotten and the dead-letter hook gets it (nats-server gives up the same
way, and announces it in an advisory).

Timers run on the injected clock (``clock.callLater`` / ``clock.seconds()``,
a reactor or ``twisted.internet.task.Clock``); durations are seconds. One
timer serves the whole tracker: it waits for the earliest deadline in a heap
whose stale entries (acked, moved) are dropped once they outnumber the live
ones, so memory stays O(pending) however often deadlines move.

Protocol-neutral: the NATS verbs (+ACK, -NAK ...), AMQP's basic.ack/nack and
MQTT's PUBACK all map onto ``ack``, ``nak``, ``term`` and ``in_progress``.
"""

from __future__ import annotations

import collections
import heapq

#: Stale heap entries tolerated beyond twice the pending ones before a rebuild.
_HEAP_SLACK = 64


class Pending:
    """A delivered message that awaits its acknowledgement."""

    __slots__ = ("consumer_seq", "deliveries", "deadline")

    def __init__(self, consumer_seq: int, deliveries: int, deadline: float):
        self.consumer_seq = consumer_seq  # the consumer's own count of deliveries when it went
        self.deliveries = deliveries
        self.deadline = deadline  # clock seconds; 0 while queued for redelivery


class AckTracker:
    """The pending deliveries of one consumer, their deadlines and redeliveries.

    ``on_due()`` is called when messages became due for redelivery (the
    consumer then delivers them); ``on_dead_letter(seq, deliveries)`` when a
    message ran out of deliveries. ``changed`` collects the sequences whose
    entry changed since ``take_changes`` (what a state journal writes), each
    with True while its entry is new since then: one that is gone again
    before the next ``take_changes`` never reached the journal, so it is
    simply dropped (a consumer that keeps up journals almost nothing)."""

    def __init__(self, clock, ack_wait: float = 30.0, backoff=(), max_deliver: int = -1, ack_all: bool = False,
                 on_due=None, on_dead_letter=None):
        self.clock = clock
        self.on_due = on_due
        self.on_dead_letter = on_dead_letter
        #: seq -> Pending, in order of first delivery (the first sets the ack floor).
        self.pending: collections.OrderedDict = collections.OrderedDict()
        self.changed: dict = {}
        self._redeliver = collections.deque()  # seqs due again, oldest first
        self._deadlines: list = []  # heap of (deadline, seq)
        self._timer = None
        self._timer_due = 0.0
        self.stopped = False
        self.configure(ack_wait, backoff, max_deliver, ack_all)

    def configure(self, ack_wait: float, backoff=(), max_deliver: int = -1, ack_all: bool = False) -> None:
        """``ack_wait``: seconds a delivery waits for its ack; ``backoff``:
        seconds per delivery count instead (the last step repeats);
        ``max_deliver``: deliveries before the dead-letter hook (<= 0: no
        limit); ``ack_all``: an ack acknowledges every pending message up to it."""
        self.ack_wait = ack_wait
        self.backoff = tuple(backoff or ())
        self.max_deliver = max_deliver
        self.ack_all = ack_all

    def wait_for(self, deliveries: int) -> float:
        """Seconds the ``deliveries``-th delivery waits for its ack."""
        backoff = self.backoff
        if backoff:
            return backoff[min(deliveries, len(backoff)) - 1]
        return self.ack_wait

    # -- deliveries -------------------------------------------------------------

    def delivered(self, seq: int, consumer_seq: int, deliveries: int) -> None:
        """``seq`` went out (for the ``deliveries``-th time): its ack wait starts."""
        deadline = self.clock.seconds() + self.wait_for(deliveries)
        entry = self.pending.get(seq)
        changed = self.changed
        if entry is None:
            self.pending[seq] = Pending(consumer_seq, deliveries, deadline)
            if seq not in changed:
                changed[seq] = True
        else:
            entry.consumer_seq, entry.deliveries, entry.deadline = consumer_seq, deliveries, deadline
            if seq not in changed:
                changed[seq] = False
        self._push_deadline(deadline, seq)

    def restore(self, seq: int, consumer_seq: int, deliveries: int) -> None:
        """A delivery not acknowledged before a restart: due again at once."""
        self.pending[seq] = Pending(consumer_seq, deliveries, 0)
        self._due(seq, self.pending[seq])

    def next_due(self):
        """``(seq, deliveries so far)`` of the next redelivery, or None. The
        caller delivers it, gives it back (``unread``) or ``forget``s it."""
        redeliver = self._redeliver
        while redeliver:
            seq = redeliver.popleft()
            entry = self.pending.get(seq)
            if entry is not None and not entry.deadline:
                return seq, entry.deliveries
        return None

    def unread(self, seq: int) -> None:
        """Put back what ``next_due`` gave: it goes first next time."""
        self._redeliver.appendleft(seq)

    def has_due(self) -> bool:
        """Is anything queued for redelivery (perhaps acked since: a hint)?"""
        return bool(self._redeliver)

    # -- acknowledgements -------------------------------------------------------

    def ack(self, seq: int) -> list:
        """Acknowledge ``seq`` (and, with ack_all, every pending one below it);
        the sequences settled, which the caller must ``forget``."""
        if self.ack_all:
            return self.ack_up_to(seq)
        return [seq] if seq in self.pending else []

    def ack_up_to(self, seq: int) -> list:
        """Every pending sequence up to ``seq`` (a cumulative ack)."""
        return [s for s in self.pending if s <= seq]

    def term(self, seq: int) -> list:
        """Never deliver ``seq`` again (its processing failed for good)."""
        return [seq] if seq in self.pending else []

    def nak(self, seq: int, delay: float = 0.0) -> None:
        """Redeliver ``seq``: after ``delay`` seconds, or as soon as possible."""
        entry = self.pending.get(seq)
        if entry is None:
            return
        if delay > 0:
            self._set_deadline(seq, entry, self.clock.seconds() + delay)
        else:
            self._due(seq, entry)

    def in_progress(self, seq: int) -> None:
        """Still working on ``seq``: its ack wait starts again."""
        entry = self.pending.get(seq)
        if entry is not None and entry.deadline:
            self._set_deadline(seq, entry, self.clock.seconds() + self.wait_for(entry.deliveries))

    def forget(self, seq: int) -> bool:
        """Done with ``seq`` (acked, terminated, removed from the log)."""
        if self.pending.pop(seq, None) is None:
            return False
        changed = self.changed
        if changed.get(seq) is True:  # new since take_changes: the journal never had it
            del changed[seq]
        else:
            changed[seq] = False
        if len(self._deadlines) > 2 * len(self.pending) + _HEAP_SLACK:
            self._compact_deadlines()
        return True

    def first(self):
        """``(seq, Pending)`` of the oldest pending delivery, or None."""
        if not self.pending:
            return None
        return next(iter(self.pending.items()))

    def redelivered(self) -> int:
        """How many pending deliveries are redeliveries."""
        return sum(1 for entry in self.pending.values() if entry.deliveries > 1)

    def take_changes(self) -> dict:
        """``seq -> Pending or None (gone)`` changed since the last call."""
        changed, self.changed = self.changed, {}
        pending = self.pending
        return {seq: pending.get(seq) for seq in changed}

    def scheduled(self) -> int:
        """Entries in the deadline heap (live and stale)."""
        return len(self._deadlines)

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- deadlines --------------------------------------------------------------

    def _set_deadline(self, seq: int, entry: Pending, deadline: float) -> None:
        entry.deadline = deadline
        self._push_deadline(deadline, seq)

    def _push_deadline(self, deadline: float, seq: int) -> None:
        if len(self._deadlines) > 2 * len(self.pending) + _HEAP_SLACK:
            self._compact_deadlines()
        heapq.heappush(self._deadlines, (deadline, seq))
        # A nak delay or a backoff step can fall before what the timer waits for.
        if self._timer is None or deadline < self._timer_due:
            self._arm_timer()

    def _compact_deadlines(self) -> None:
        """Drop the stale heap entries (the callers do it once they outnumber
        the live ones: amortised O(1) per change, so the heap stays O(pending))."""
        deadlines = self._deadlines
        deadlines[:] = [(e.deadline, s) for s, e in self.pending.items() if e.deadline]
        heapq.heapify(deadlines)

    def _due(self, seq: int, entry: Pending) -> None:
        """Queue ``seq`` for redelivery, or give up on it after max_deliver."""
        if 0 < self.max_deliver <= entry.deliveries:
            self.forget(seq)
            if self.on_dead_letter is not None:
                self.on_dead_letter(seq, entry.deliveries)
            return
        entry.deadline = 0
        self._redeliver.append(seq)

    def _arm_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._deadlines and not self.stopped:
            self._timer_due = self._deadlines[0][0]
            delay = max(0.0, self._timer_due - self.clock.seconds())
            self._timer = self.clock.callLater(delay, self._deadlines_passed)

    def _deadlines_passed(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        deadlines = self._deadlines
        due = False
        while deadlines and deadlines[0][0] <= now:
            deadline, seq = heapq.heappop(deadlines)
            entry = self.pending.get(seq)
            if entry is not None and entry.deadline == deadline:
                self._due(seq, entry)
                due = True
        self._arm_timer()
        if due and self.on_due is not None:
            self.on_due()
