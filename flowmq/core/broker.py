"""The broker Service: the one core shared by every protocol listener.

It owns the router, the write batcher and the storage engine, and does the
protocol-neutral part of publishing: match the topic, hand the message to
each stand-alone subscription and to one member of each queue group.
Listeners (one per protocol) and destinations with their own model (the
JetStream streams) are sibling services that get the broker handed in.
"""

from __future__ import annotations

import os

from twisted.application import service
from twisted.internet.defer import fail

from flowmq.core.errors import PermissionDenied
from flowmq.core.router import Router
from flowmq.core.store import StorageEngine
from flowmq.core.streams.registry import LogRegistry
from flowmq.logs import logger

_log = logger("flowmq.broker")


class _Everything:
    """The ``failed`` stores of a flush that failed as a whole: all of them."""

    def __contains__(self, store) -> bool:
        return True


ALL_FAILED = _Everything()


class WriteBatcher:
    """Collects the connections that have output waiting and flushes them in
    one go, so that a burst of deliveries becomes one write per connection.

    A connection calls ``mark(self)`` when it queues its first pending bytes;
    ``flush_output()`` is then called on it when the batch ends. A protocol
    that handles a read brackets it with ``begin()`` and ``end()``: the batch
    is everything that read caused, flushed at once when it is done. Output
    queued outside a read (timers) is flushed at the end of the reactor turn.

    Durability comes first: when the store has appends waiting (``need_sync``),
    ``sync`` (the broker's flush of the storage engine) starts before any
    connection's output is written. It returns a Deferred that fires once the
    appends are durable under the fsync policy (an fsync on a worker thread
    under "always"): acknowledgements go out from there, so one never leaves
    before what it acknowledges, and the reactor serves everyone else while
    the disk works. One sync runs at a time: appends made meanwhile wait for
    the next, which starts when it is done and takes them all (group commit).
    """

    def __init__(self, clock):
        self._clock = clock
        self._dirty: list = []
        self._call = None
        self._reads = 0  # reads under way (a login that completes inside a read nests)
        self.sync = None  # makes the store's pending appends durable: None when done, else a Deferred
        self._sync_due = False
        self._syncing = False  # a sync's Deferred has not fired yet

    def mark(self, connection) -> None:
        self._dirty.append(connection)
        self._schedule()

    def all_below(self, size: int) -> bool:
        """Has every connection marked in this batch less than ``size``
        bytes waiting (``pending``)?"""
        for connection in self._dirty:
            if connection.pending >= size:
                return False
        return True

    def need_sync(self) -> None:
        """The store has appends to write before the next output goes out."""
        self._sync_due = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._reads and self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def begin(self) -> None:
        self._reads += 1

    def end(self) -> None:
        self._reads -= 1
        if not self._reads and (self._dirty or self._sync_due):
            self.flush()

    def flush(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        if self._sync_due and not self._syncing:
            self._sync_due = False
            try:
                pending = self.sync()
            except Exception:
                pending = fail()
            if pending is not None:  # an fsync under way: the next sync waits for it
                self._syncing = True
                pending.addErrback(self._sync_failed).addBoth(self._sync_done)
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            try:
                connection.flush_output()
            except Exception:  # one broken connection must not keep the others' output back
                _log.failure("flushing the output of {connection}", connection=connection)

    @staticmethod
    def _sync_failed(failure) -> None:
        # A full or failing disk: say so loudly, keep serving the others.
        _log.failure("writing the store to disk failed", failure)

    def _sync_done(self, _ignored) -> None:
        """The sync fired (its acknowledgements are queued): send them, and
        start the next sync if appends came meanwhile."""
        self._syncing = False
        if not self._reads and (self._dirty or self._sync_due):
            self.flush()


def _delivery_failed(consumer, message) -> None:
    """Log a consumer's failure to take a message (the others still get it)."""
    _log.failure("delivering a message on {topic} to {consumer} failed", topic=message.topic, consumer=consumer)


class Broker(service.Service):
    """Routes messages from any protocol to the subscriptions of every protocol."""

    def __init__(self, settings, clock):
        self.settings = settings
        self.clock = clock
        self.router = Router(settings.broker.route_cache_size, settings.broker.max_topic_levels)
        self.batcher = WriteBatcher(clock)
        #: Callables told of every new subscription (push consumers wait for
        #: interest in their delivery topic).
        self.interest_watchers: list = []
        #: Callables ``()`` run as each store flush begins (the cut: what is
        #: waiting for the disk now is what this flush makes durable) and
        #: ``(failed stores)`` run once it is durable (under the fsync policy),
        #: on the reactor thread: acknowledgements of stored messages go out
        #: there, those waiting at the cut only. One call of each per flush, in order.
        self.before_sync: list = []
        self.after_sync: list = []
        self.storage = None
        self.logs = LogRegistry(self)  # the logs of every protocol, by (kind, name)

    def startService(self):
        storage = self.settings.storage
        # The slow file work runs in the reactor's thread pool; a clock that
        # is no reactor (a test's task.Clock) has none: then it runs inline.
        pool = self.clock.getThreadPool() if hasattr(self.clock, "getThreadPool") else None
        self.storage = StorageEngine(
            self.settings.broker.data_dir, fsync=storage.fsync,
            fsync_interval=storage.fsync_interval_ms / 1000.0, segment_bytes=storage.segment_bytes,
            clock=self.clock, on_dirty=self.batcher.need_sync, compact_interval=storage.compact_interval,
            reactor=self.clock if pool is not None else None, threadpool=pool)
        self.batcher.sync = self._sync
        every = " every %d ms" % storage.fsync_interval_ms if storage.fsync == "interval" else ""
        _log.info("storage: JetStream streams in {path}, fsync {policy}{every} {where}, segments of {size} bytes",
                  path=os.path.abspath(os.path.join(self.settings.broker.data_dir, "streams")),
                  policy=storage.fsync, every=every, size=storage.segment_bytes,
                  where="on a worker thread" if pool is not None else "inline (no thread pool)")
        service.Service.startService(self)

    def _sync(self):
        """Write the stores (the cut: ``before_sync``); once that is durable,
        tell whoever waits to acknowledge (``after_sync``), with the stores
        that failed: their messages must not be acknowledged. A Deferred
        while an fsync is awaited, None when it is all done already."""
        for cut in self.before_sync:
            cut()
        try:
            failed, fsync = self.storage.write_all()
        except Exception:  # not a disk error but a bug: acknowledge nothing of this batch
            failed, fsync = None, fail()
        if fsync is None:  # written, and no fsync to wait for: no Deferred on the hot path
            self._synced(failed)
            return None
        return fsync.addErrback(self._flush_failed).addCallback(self._synced)

    @staticmethod
    def _flush_failed(failure):
        _log.failure("writing the stores failed", failure)
        return ALL_FAILED

    def _synced(self, failed) -> None:
        for synced in self.after_sync:
            try:
                synced(failed)
            except Exception:  # one waiter's bug must not keep the others' acknowledgements back
                _log.failure("releasing acknowledgements failed")

    def stopService(self):
        """Stop; the Deferred fires once the storage's pending work is done and its files closed."""
        service.Service.stopService(self)
        return self.storage.close()

    def subscribe(self, subscription) -> None:
        """Add a subscription; PermissionDenied if its consumer's permissions say no.

        All or nothing: if an interest watcher raises, the subscription is
        taken out of the router again and the exception goes to the caller.
        """
        permissions = subscription.consumer.permissions
        if permissions is not None and not permissions.may_subscribe(subscription.filter):
            raise PermissionDenied(subscription.filter)
        self.router.subscribe(subscription)
        try:
            for watcher in self.interest_watchers:
                watcher(subscription)
        except BaseException:
            self.router.unsubscribe(subscription)
            raise

    def unsubscribe(self, subscription) -> bool:
        return self.router.unsubscribe(subscription)

    def publish(self, message) -> int:
        """Deliver ``message`` to everything that matches; returns how many it was handed to.

        PermissionDenied if the publisher's permissions do not allow the topic.
        Consumers whose permissions deny them the topic are passed over, and
        those that may answer requests learn the reply topic (allow_responses).
        """
        return self.publish_run((message,))

    def publish_run(self, messages) -> int:
        """``publish`` for a run of messages (a MessageRun, or a 1-tuple for
        one message): one permission check and one route lookup serve the
        whole run; returns how many consumers each message was handed to."""
        first = messages[0]
        origin = first.origin
        if origin is not None and origin.permissions is not None and not origin.permissions.may_publish(first.topic):
            raise PermissionDenied(first.topic)
        return self.deliver_run(first.topic, messages)

    def deliver_to(self, topic: str, message) -> int:
        """Deliver ``message`` to the subscriptions of ``topic``, which need not
        be the message's own topic: a stream hands a stored message to the
        delivery topic of its consumer this way, and the message keeps the
        topic it was published on. Returns how many consumers it was handed to.

        Each consumer gets one ``deliver(message, subscriptions)`` with all of
        its stand-alone subscriptions that match (the router's cached
        ``deliveries``), and each queue group one member's. An exception in
        one consumer's ``deliver`` is logged and costs that delivery only;
        it still counts in the number returned (how many were attempted: a
        request is answered "no responders" only when there were none).
        """
        return self.deliver_run(topic, (message,))

    def deliver_run(self, topic: str, messages) -> int:
        """``deliver_to`` for a run of messages (see ``publish_run``): each
        consumer takes the run with one ``deliver_run(messages,
        subscriptions)`` (a single message with ``deliver``), and each
        queue group picks a member per message. The run is matched once,
        as though its messages had arrived at the same moment."""
        first = messages[0]
        single = len(messages) == 1
        origin = first.origin
        router = self.router
        deliveries, groups = router.cached(topic) or router.lookup(topic)
        delivered = 0
        if not single and len(deliveries) > 1:
            messages.fanout = True  # a MessageRun here
        for consumer, subscriptions, local in deliveries:
            if consumer is origin:
                if not consumer.echo or not local:
                    continue
                subscriptions = local  # without the no-local ones
            if consumer.permissions is not None and not self._may_receive(consumer, first):
                continue
            delivered += 1  # attempted: a failing target still counts as a responder
            try:
                if single:
                    consumer.deliver(first, subscriptions)
                else:
                    consumer.deliver_run(messages, subscriptions)
            except Exception:
                _delivery_failed(consumer, first)
        if len(groups) > 1 and not single:
            messages.messages()  # each group's shares then take these: one Message per message
        for group in groups:
            if self._deliver_run_to_group(group, topic, messages):
                delivered += 1
        return delivered

    def _deliver_run_to_group(self, group, topic: str, messages) -> bool:
        """Each message to the group member picked for it; False if there
        was none. A run goes to each member as one run of its share, unless
        a member ends after a number of messages (``limited``): then one
        message at a time, so that the messages after its last go to the
        others, each member's in order."""
        origin = messages[0].origin
        if len(messages) == 1 or any(member.limited for member in group.members):
            picked = False
            for message in messages:
                member = group.pick(origin, topic, message.topic)
                if member is not None:
                    picked = True
                    self._hand_to_member(member, (message,))
            return picked
        shares = group.deal(messages, origin, topic)
        for member, positions in shares.items():  # ``messages`` is a MessageRun here
            share = messages.share(positions) if len(positions) > 1 else (messages.at(positions[0]),)
            self._hand_to_member(member, share)
        return bool(shares)

    def _hand_to_member(self, member, messages) -> None:
        consumer = member.consumer
        if consumer.permissions is not None:
            self._note_reply(consumer, messages[0])
        try:
            if len(messages) == 1:
                consumer.deliver(messages[0], member.alone)
            else:
                consumer.deliver_run(messages, member.alone)
        except Exception:
            _delivery_failed(consumer, messages[0])

    @classmethod
    def _may_receive(cls, consumer, message) -> bool:
        if not consumer.permissions.may_receive(message.topic):
            return False
        cls._note_reply(consumer, message)
        return True

    @staticmethod
    def _note_reply(consumer, message) -> None:
        """A consumer with ``allow_responses`` may answer the message's reply topic."""
        if message.reply_to is not None and message.origin is not consumer:
            consumer.permissions.note_reply(message.reply_to)
