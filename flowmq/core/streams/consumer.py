"""The core consumer: a cursor and an ack tracker joined to delivery targets.

A consumer reads a log (a message store) with a ``Cursor`` (cursor.py),
remembers what awaits an acknowledgement with an ``AckTracker`` (acks.py),
and hands messages to its *targets*: whatever takes deliveries, each with
*credit*, how many more messages it can take right now (an AMQP consumer's
prefetch left, an MQTT session's receive maximum left, what is left of a
JetStream pull request's batch; a push target that takes all it gets has
``UNLIMITED``). The first target with credit gets the next message;
redeliveries go before new messages; ``max_ack_pending`` stops new messages
(not redeliveries) while that many await their ack.

A target implements ``IConsumerTarget``. The protocol adapter subclasses
``Consumer`` to hear about state changes (``changed``: save soon),
settled messages (``settled``: retention), dead letters and the end of a
round of deliveries (``pumped``).

The sequences kept are nats-server's: ``delivered`` (consumer seq: deliveries
made, stream seq: highest delivered) and ``ack_floor`` (all at or below it
are settled). ``state``/``restore`` give and take what survives a restart;
``delta`` what changed since the last call, for a state journal (state.py).
"""

from __future__ import annotations

import collections
import sys

from zope.interface import Interface

from flowmq.core.streams.acks import AckTracker
from flowmq.core.streams.cursor import Cursor
from flowmq.logs import logger

log = logger("flowmq.streams")

#: Ack policies: none (delivered is done), explicit (each message), all (cumulative).
ACK_NONE = "none"
ACK_EXPLICIT = "explicit"
ACK_ALL = "all"
#: The credit of a target that takes whatever comes.
UNLIMITED = sys.maxsize


class IConsumerTarget(Interface):
    """Where a consumer's messages go."""

    def credit():
        """How many more messages the target can take now (0: none for now;
        the consumer tries again at its next ``pump``). A target may detach
        itself here (an expired request) and answer 0."""

    def deliver(delivery):
        """Send ``delivery`` (a ``Delivery``); False if the target refuses
        it (too large, say): it goes back and comes again next time."""


class Delivery:
    """One message on its way to a target."""

    __slots__ = ("stored", "deliveries", "consumer_seq")

    def __init__(self, stored, deliveries: int, consumer_seq: int):
        self.stored = stored  # the StoredMessage (seq, topic, headers, payload, timestamp)
        self.deliveries = deliveries  # 1 the first time
        self.consumer_seq = consumer_seq

    def __repr__(self):
        return "<Delivery seq=%d #%d>" % (self.stored.seq, self.deliveries)


class Consumer:
    """One consumer of one log."""

    def __init__(self, store, clock, filters=None, ack_policy: str = ACK_EXPLICIT, ack_wait: float = 30.0,
                 backoff=(), max_deliver: int = -1, max_ack_pending: int = -1):
        self.store = store
        self.clock = clock
        self.cursor = Cursor(store, filters)
        self.acks = AckTracker(clock, on_due=self.pump, on_dead_letter=self._dead_lettered)
        self.targets = collections.deque()
        self.delivered_consumer_seq = 0
        self.delivered_stream_seq = 0
        self.ack_floor_consumer_seq = 0
        self.ack_floor_stream_seq = 0
        self.stopped = False
        self._pumping = False
        self.set_policy(ack_policy, ack_wait, backoff, max_deliver, max_ack_pending)

    def set_policy(self, ack_policy: str, ack_wait: float, backoff=(), max_deliver: int = -1,
                   max_ack_pending: int = -1) -> None:
        """Seconds for ``ack_wait`` and ``backoff``; <= 0 for no limit."""
        self.ack_none = ack_policy == ACK_NONE
        self.max_ack_pending = max_ack_pending
        self.acks.configure(ack_wait, backoff, max_deliver, ack_policy == ACK_ALL)

    # -- what adapters override --------------------------------------------------

    def changed(self) -> None:
        """The state to persist changed."""

    def settled(self, seqs) -> None:
        """These messages were acknowledged or terminated (retention may drop them)."""

    def dead_letter(self, seq: int, deliveries: int) -> None:
        """``seq`` was delivered ``deliveries`` times without an ack: given up."""

    def pumped(self) -> None:
        """A round of deliveries ended."""

    # -- start, targets, stop ------------------------------------------------------

    def start(self, position: str, seq: int = 0, timestamp: int = 0) -> None:
        """Where a new consumer starts (cursor.START_POSITIONS)."""
        self.cursor.start(position, seq, timestamp)
        self.delivered_stream_seq = self.ack_floor_stream_seq = max(self.cursor.next_seq - 1, 0)

    def attach(self, target) -> None:
        """A target (IConsumerTarget) takes messages from now on."""
        self.targets.append(target)
        self.pump()

    def detach(self, target) -> None:
        try:
            self.targets.remove(target)
        except ValueError:
            pass

    def stop(self) -> None:
        self.stopped = True
        self.acks.stop()

    # -- the log ------------------------------------------------------------------------

    def wants(self, topic: str) -> bool:
        return self.cursor.wants(topic)

    def has_acknowledged(self, seq: int) -> bool:
        """Is ``seq`` settled for this consumer (or never wanted by it)?"""
        if seq <= self.ack_floor_stream_seq:
            return True
        return self.cursor.has_read(seq) and seq not in self.acks.pending

    def appended(self, topic: str) -> None:
        """A message was stored: count it, deliver it if a target waits."""
        self.cursor.appended(topic)
        if self.targets:
            self.pump()

    def removed(self, seq: int, topic: str) -> None:
        """The log removed a message (limits, expiry, delete, purge)."""
        self.cursor.removed(seq, topic)

    def num_pending(self) -> int:
        """Messages not delivered yet."""
        return self.cursor.num_pending()

    def prune(self) -> None:
        """After a purge: forget deliveries of messages that are gone, and move
        past the purged range (as nats-server's consumer purge does)."""
        first = self.store.state().first_seq
        gone = [seq for seq in self.acks.pending if self.store.get(seq) is None]
        for seq in gone:
            self.acks.forget(seq)
        if gone:
            self._move_floor()
        self.cursor.skip_to(first)
        if first - 1 > self.delivered_stream_seq:
            self.delivered_stream_seq = first - 1
        if not self.acks.pending:
            self.ack_floor_stream_seq = max(self.ack_floor_stream_seq, self.delivered_stream_seq)
        self.changed()
        self.pump()

    # -- delivery -------------------------------------------------------------------------

    def pump(self) -> None:
        """Deliver while a target has credit and there is something to deliver."""
        if self._pumping or self.stopped:
            return
        self._pumping = True
        try:
            while not self.stopped:
                target = self._target()
                if target is None:
                    break
                delivery = self._take()
                if delivery is None:
                    break
                try:
                    taken = target.deliver(delivery)
                except Exception:  # the message stays this consumer's to deliver; this round ends
                    self._unread(delivery)
                    log.failure("a consumer's target failed to take message {seq}; it is delivered again later",
                                seq=delivery.stored.seq)
                    break
                if taken:
                    self._record(delivery)
                else:
                    self._unread(delivery)
        finally:
            self._pumping = False
        if not self.stopped:
            self.pumped()

    def _target(self):
        """The first target with credit (asking may make a target detach itself)."""
        targets = self.targets
        index = 0
        while index < len(targets):
            target = targets[index]
            if target.credit() > 0:
                return target
            if index < len(targets) and targets[index] is target:
                index += 1
        return None

    def _take(self):
        """The next Delivery (redeliveries first), or None."""
        acks = self.acks
        due = acks.next_due()
        while due is not None:
            seq, deliveries = due
            stored = self.store.get(seq)
            if stored is not None:
                return Delivery(stored, deliveries + 1, self.delivered_consumer_seq + 1)
            acks.forget(seq)  # removed meanwhile (limits, purge): nothing to redeliver
            self._move_floor()
            self.changed()
            due = acks.next_due()
        if not self.ack_none and 0 < self.max_ack_pending <= len(acks.pending):
            return None
        stored = self.cursor.next()
        if stored is None:
            return None
        return Delivery(stored, 1, self.delivered_consumer_seq + 1)

    def _unread(self, delivery: Delivery) -> None:
        if delivery.deliveries > 1:
            self.acks.unread(delivery.stored.seq)
        else:
            self.cursor.unread(delivery.stored)

    def _record(self, delivery: Delivery) -> None:
        self.delivered_consumer_seq = delivery.consumer_seq
        seq = delivery.stored.seq
        if seq > self.delivered_stream_seq:
            self.delivered_stream_seq = seq
        if self.ack_none:
            self.ack_floor_consumer_seq, self.ack_floor_stream_seq = delivery.consumer_seq, self.delivered_stream_seq
        else:
            self.acks.delivered(seq, delivery.consumer_seq, delivery.deliveries)
        self.changed()

    # -- acknowledgements ---------------------------------------------------------------

    def ack(self, seq: int) -> None:
        """Acknowledge ``seq`` (with ACK_ALL: everything pending up to it)."""
        self._settle(self.acks.ack(seq))

    def ack_up_to(self, seq: int) -> None:
        """Acknowledge every pending message up to ``seq``."""
        self._settle(self.acks.ack_up_to(seq))

    def term(self, seq: int) -> None:
        """Never deliver ``seq`` again."""
        self._settle(self.acks.term(seq))

    def nak(self, seq: int, delay: float = 0.0) -> None:
        """Deliver ``seq`` again, after ``delay`` seconds or at once."""
        self.acks.nak(seq, delay)
        self.changed()
        self.pump()

    def in_progress(self, seq: int) -> None:
        """Still working on ``seq``: its ack wait starts again."""
        self.acks.in_progress(seq)

    def _settle(self, seqs) -> None:
        if not seqs:
            return
        for seq in seqs:
            self.acks.forget(seq)
        self._move_floor()
        self.changed()
        self.settled(seqs)
        if self.targets:  # room for more now (max_ack_pending); nobody to deliver to otherwise
            self.pump()

    def _dead_lettered(self, seq: int, deliveries: int) -> None:
        self._move_floor()
        self.changed()
        self.dead_letter(seq, deliveries)

    def _move_floor(self) -> None:
        """The ack floor: just below the oldest pending delivery, or all delivered."""
        first = self.acks.first()
        if first is not None:
            seq, entry = first
            self.ack_floor_stream_seq = seq - 1
            self.ack_floor_consumer_seq = entry.consumer_seq - 1
        else:
            self.ack_floor_stream_seq = self.delivered_stream_seq
            self.ack_floor_consumer_seq = self.delivered_consumer_seq

    # -- persistence ----------------------------------------------------------------------

    def state(self) -> dict:
        """What survives a restart (what is pending is delivered again after it)."""
        return {
            "next_seq": self.cursor.next_seq,
            "delivered": [self.delivered_consumer_seq, self.delivered_stream_seq],
            "ack_floor": [self.ack_floor_consumer_seq, self.ack_floor_stream_seq],
            "pending": [[seq, entry.consumer_seq, entry.deliveries] for seq, entry in self.acks.pending.items()],
            "last_per_topic": self.cursor.first_left(),
        }

    def delta(self) -> dict:
        """What changed since the last ``delta`` (or ``restore``): the scalars,
        pending entries set ([seq, consumer seq, deliveries]) and gone (seqs),
        and how many last-per-topic seqs are left. Its size grows with the
        changes, not with the pending list (state.py journals it)."""
        changes = self.acks.take_changes()
        return {
            "next_seq": self.cursor.next_seq,
            "delivered": [self.delivered_consumer_seq, self.delivered_stream_seq],
            "ack_floor": [self.ack_floor_consumer_seq, self.ack_floor_stream_seq],
            "set": [[seq, entry.consumer_seq, entry.deliveries] for seq, entry in changes.items() if entry is not None],
            "gone": [seq for seq, entry in changes.items() if entry is None],
            "last_per_topic_left": self.cursor.first_left_count(),
        }

    def restore(self, state: dict) -> None:
        """Take a saved state; pending deliveries are due again at once."""
        self.cursor.restore(state["next_seq"], state.get("last_per_topic", ()))
        self.delivered_consumer_seq, self.delivered_stream_seq = state["delivered"]
        self.ack_floor_consumer_seq, self.ack_floor_stream_seq = state["ack_floor"]
        for seq, consumer_seq, deliveries in state["pending"]:
            self.acks.restore(seq, consumer_seq, deliveries)
        self.acks.take_changes()
