"""The log: a store plus the topics it takes in, shared by every protocol.

A Log subscribes its topic filters in the core router like any consumer
(all of them or none), so a message published on them by any protocol is
stored. For each message it runs its ingest rules (rules.py: de-duplication,
and a protocol's own, such as JetStream's expectations), appends it to its
store and tells its consumers. It removes messages by retention:

- "limits": only the store's limits (count, bytes, age, per topic) remove;
- "interest": a message goes once every consumer that wants it (its filters
  match the topic) has acknowledged it, and one that no consumer wants is
  not kept at all;
- "workqueue": a message goes once one consumer has acknowledged it.

Expiry (the store's ``max_age``) is a timer on the injected reactor clock,
due at least every second. The log knows no protocol: a protocol adapter
(JetStream's Stream) gives it rules and ``answers``, an object with

- ``accepted(message, seq, duplicate)``: the message is stored (or repeats
  ``seq``); returns None, or a callable ``(error)`` to call once the store
  has written it (error None) or failed to (see ``written``);
- ``refused(message, error)``: a rule or the store refused it.

A publisher's Receipt (receipts.py) is held at ingest and completed at the
same moment: when the broker's store flush has run (its ``after_sync``
callbacks, which the registry relays to ``written``), or at once with the
error when the message is refused. Nothing is queued for a message with
neither a receipt nor an answer, so the common path costs what it did.

Consumers, kept in ``consumers`` (name -> consumer), give the log:
``wants(topic)``, ``has_acknowledged(seq)``, ``on_append(topic)`` and
``on_removed(seq, topic)``; they call ``acknowledged(consumer, seqs)`` and,
when one goes, ``forget_interest(first)``.
"""

from __future__ import annotations

import time

from zope.interface import implementer

from flowmq.core.interfaces import IDestination, InternalTarget
from flowmq.core.router import Subscription
from flowmq.core.store import LimitExceeded
from flowmq.core.streams.rules import Refused
from flowmq.logs import logger

log = logger("flowmq.streams")

RETENTIONS = ("limits", "interest", "workqueue")
#: Longest wait (s) between two expiry sweeps of a log with a max age.
EXPIRY_PERIOD = 1.0


class WriteFailed(Exception):
    """The store could not write the message to disk: it is not kept."""


@implementer(IDestination)
class Log(InternalTarget):
    """One log; see the module docstring. ``kind`` and ``name`` are its key
    in the registry (the protocol's namespace and the name in it). As a
    delivery target of the router it takes every message, under nobody's
    permissions."""

    def __init__(self, kind: str, name: str, store, broker, retention: str = "limits", rules=(),
                 answers=None, now=time.time_ns):
        self.kind = kind
        self.name = name
        self.store = store
        self.broker = broker
        self.clock = broker.clock
        self.retention = _checked(retention)
        self.answers = answers
        #: The wall clock in ns (stored timestamps, max age, duplicate window).
        self.now = now
        self.consumers: dict = {}
        self.filters: tuple = ()
        self.attached = False
        self._checks = tuple(rule.check for rule in rules if rule.check is not None)
        self._on_stored = tuple(rule.stored for rule in rules if rule.stored is not None)
        self._on_unwritten = tuple(rule.unwritten for rule in rules if rule.unwritten is not None)
        self._on_restore = tuple(rule.restore for rule in rules if rule.restore is not None)
        self._subscriptions: list = []
        self._expiry = None
        self._unwritten: list = []  # (seq or 0, answer or None, receipt done or None), until the write
        store.on_remove = self._removed

    # -- topics, limits, start and stop -----------------------------------------

    def configure(self, filters, limits, retention: str) -> None:
        """Take new topic filters, store limits and retention. An attached
        log subscribes to the new filters before anything else changes, so
        filters the router refuses (InvalidTopic) leave it as it was."""
        _checked(retention)
        filters = tuple(filters)
        if self.attached:
            subscriptions = self._subscribe(filters)
            self._unsubscribe()
            self._subscriptions = subscriptions
            self._stop_expiry()
        self.filters = filters
        self.retention = retention
        self.store.update_limits(limits)
        if self.attached:
            self._start()

    def attach(self) -> None:
        """Start taking messages: enter the registry, subscribe to the
        filters (all or none), restore the rules' state, start expiring."""
        registry = self.broker.logs
        registry.add(self)
        try:
            self._subscriptions = self._subscribe(self.filters)
        except Exception:
            registry.remove(self)
            raise
        self.attached = True
        self._start()

    def detach(self) -> None:
        """Stop taking messages: leave the router and the registry, stop expiring."""
        if self.attached:
            self.broker.logs.remove(self)
        self.attached = False
        self._unsubscribe()
        self._stop_expiry()

    def covers_all(self, topic_filters) -> bool:
        """Do these consumer filters take in every topic of the log?"""
        return not topic_filters or set(topic_filters) >= set(self.filters)

    def _subscribe(self, filters) -> list:
        router = self.broker.router
        subscriptions = []
        try:
            for topic_filter in filters:
                subscription = Subscription(self, topic_filter)
                router.subscribe(subscription)
                subscriptions.append(subscription)
        except Exception:
            for subscription in subscriptions:
                router.unsubscribe(subscription)
            raise
        return subscriptions

    def _unsubscribe(self) -> None:
        for subscription in self._subscriptions:
            self.broker.router.unsubscribe(subscription)
        self._subscriptions = []

    def _start(self) -> None:
        for restore in self._on_restore:
            restore(self)
        if self.store.limits.max_age and self._expiry is None:
            self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        self._expiry = self.clock.callLater(min(EXPIRY_PERIOD, self.store.limits.max_age / 1e9), self._expire)

    def _stop_expiry(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    def _expire(self) -> None:
        self._expiry = None
        self.store.expire(self.now())
        if self.store.limits.max_age:
            self._schedule_expiry()

    # -- taking messages in ------------------------------------------------------------

    def deliver(self, message, subscriptions):
        """The router hands over a message published on one of our topics
        (``subscriptions``, those of ours that match, does not matter here).
        Returns its sequence (that of the stored one for a duplicate), or
        None if it was refused (for a protocol that stores messages itself)."""
        try:
            seq, duplicate = self.append(message)
        except Exception as error:
            if not isinstance(error, (Refused, LimitExceeded)):  # a fault, not a rule: say so
                log.failure("log {kind}/{name}: storing a message on {topic} failed",
                            kind=self.kind, name=self.name, topic=message.topic)
            if self.answers is not None:
                self.answers.refused(message, error)
            if message.receipt is not None:
                message.receipt.hold()(error)
            return None
        # The message is stored: hold its receipt and queue it for the write
        # before anything else can raise, so it is answered only after the fsync.
        receipt = message.receipt
        done = None if receipt is None else receipt.hold()
        answer = None
        if self.answers is not None:
            try:
                answer = self.answers.accepted(message, seq, duplicate)
            except Exception:
                log.failure("log {kind}/{name}: answering a message on {topic} failed", kind=self.kind,
                            name=self.name, topic=message.topic)
        if answer is not None or done is not None:
            self._unwritten.append((0 if duplicate else seq, answer, done))
            self.broker.logs.wait_for_write(self)
        if not duplicate and (self.consumers or self.retention == "interest"):
            self._appended(seq, message.topic)
        return seq

    def append(self, message):
        """Run the rules and store ``message``: ``(seq, False)``, or
        ``(seq of the stored one, True)`` for a duplicate. Raises what a rule
        or the store (LimitExceeded) refuses it with."""
        for check in self._checks:
            seen = check(self, message)
            if seen is not None:
                return seen, True
        seq, timestamp = self.store.append(message.topic, message.headers or None, message.payload, self.now(),
                                           properties=message.properties)
        for stored in self._on_stored:
            stored(self, message, seq, timestamp)
        return seq, False

    def _appended(self, seq: int, topic: str) -> None:
        if self.retention == "interest" and not any(c.wants(topic) for c in self.consumers.values()):
            self.store.delete(seq)  # an interest log keeps nothing nobody wants
            return
        for consumer in list(self.consumers.values()):
            try:
                consumer.on_append(topic)
            except Exception:  # one consumer's fault must not keep the message from the others
                log.failure("log {kind}/{name}: consumer {consumer} failed to take a message on {topic}",
                            kind=self.kind, name=self.name, consumer=getattr(consumer, "name", consumer),
                            topic=topic)

    def unwritten(self) -> int:
        """How many messages wait for the store's write to be answered."""
        return len(self._unwritten)

    def written(self, failed: bool, count: int) -> None:
        """The store was written (or ``failed``) up to the oldest ``count``
        waiting messages: answer them and complete their receipts. What
        failed to reach the disk is not kept either: those messages are
        deleted (a retry must not make a second copy) and the rules forget them."""
        waiting, self._unwritten = self._unwritten[:count], self._unwritten[count:]
        error = None
        if failed:
            error = WriteFailed("writing to disk failed")
            refused = {seq for seq, _answer, _done in waiting if seq}
            for seq in refused:
                self.store.delete(seq)
            for unwritten in self._on_unwritten:
                try:
                    unwritten(self, refused)
                except Exception:  # the publishers are still told
                    log.failure("log {kind}/{name}: a rule failed to forget unwritten messages",
                                kind=self.kind, name=self.name)
        for _seq, answer, done in waiting:
            for callback in (answer, done):
                if callback is not None:
                    try:
                        callback(error)
                    except Exception:  # the others of this write are still answered
                        log.failure("log {kind}/{name}: answering a written message failed",
                                    kind=self.kind, name=self.name)

    def _removed(self, seq: int, topic: str) -> None:
        for consumer in self.consumers.values():
            consumer.on_removed(seq, topic)

    # -- retention by acknowledgement -----------------------------------------------

    def acknowledged(self, consumer, seqs) -> None:
        """``consumer`` acknowledged the messages ``seqs``; interest and
        work-queue logs drop those that nobody else still needs."""
        retention = self.retention
        if retention == "limits":
            return
        for seq in seqs:
            if retention == "interest":
                stored = self.store.get(seq)
                if stored is None or not all(
                        c.has_acknowledged(seq) for c in self.consumers.values() if c.wants(stored.topic)):
                    continue
            self.store.delete(seq)

    def forget_interest(self, first: int) -> None:
        """A consumer went whose ack floor was ``first - 1``: an interest
        log drops the messages from ``first`` on that nobody left wants
        (those below were acknowledged by it, so kept only for others)."""
        if self.retention != "interest":
            return
        consumers = list(self.consumers.values())
        for stored in self.store.messages_from(first):
            if all(c.has_acknowledged(stored.seq) for c in consumers if c.wants(stored.topic)):
                self.store.delete(stored.seq)


def _checked(retention: str) -> str:
    if retention not in RETENTIONS:
        raise ValueError("retention must be one of %s, not %r" % (", ".join(RETENTIONS), retention))
    return retention
