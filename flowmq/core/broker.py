"""The broker Service: the one core shared by every protocol listener.

It owns the router and the write batcher and does the protocol-neutral part
of publishing: match the topic, hand the message to each stand-alone
subscription and to one member of each queue group. Listeners (one per
protocol) are sibling services that get the broker handed in.
"""

from __future__ import annotations

from twisted.application import service

from flowmq.core.errors import PermissionDenied
from flowmq.core.router import Router
from flowmq.logs import logger

_log = logger("flowmq.broker")


class WriteBatcher:
    """Collects the connections that have output waiting and flushes them in
    one go, so that a burst of deliveries becomes one write per connection.

    A connection calls ``mark(self)`` when it queues its first pending bytes;
    ``flush_output()`` is then called on it when the batch ends. A protocol
    that handles a read brackets it with ``begin()`` and ``end()``: the batch
    is everything that read caused, flushed at once when it is done. Output
    queued outside a read (timers) is flushed at the end of the reactor turn.
    """

    def __init__(self, clock):
        self._clock = clock
        self._dirty: list = []
        self._call = None
        self._reads = 0  # reads under way (a login that completes inside a read nests)

    def mark(self, connection) -> None:
        self._dirty.append(connection)
        if not self._reads and self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def begin(self) -> None:
        self._reads += 1

    def end(self) -> None:
        self._reads -= 1
        if not self._reads and self._dirty:
            self.flush()

    def flush(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            try:
                connection.flush_output()
            except Exception:  # one broken connection must not keep the others' output back
                _log.failure("flushing the output of {connection}", connection=connection)


class Broker(service.Service):
    """Routes messages from any protocol to the subscriptions of every protocol."""

    def __init__(self, settings, clock):
        self.settings = settings
        self.clock = clock
        self.router = Router(settings.broker.route_cache_size, settings.broker.max_topic_levels)
        self.batcher = WriteBatcher(clock)

    def subscribe(self, subscription) -> None:
        """Add a subscription; PermissionDenied if its consumer's permissions say no."""
        permissions = subscription.consumer.permissions
        if permissions is not None and not permissions.may_subscribe(subscription.filter):
            raise PermissionDenied(subscription.filter)
        self.router.subscribe(subscription)

    def unsubscribe(self, subscription) -> bool:
        return self.router.unsubscribe(subscription)

    def publish(self, message) -> int:
        """Deliver ``message`` to everything that matches; returns how many got it.

        PermissionDenied if the publisher's permissions do not allow the topic.
        Consumers whose permissions deny them the topic are passed over, and
        those that may answer requests learn the reply topic (allow_responses).
        """
        topic = message.topic
        origin = message.origin
        if origin is not None and origin.permissions is not None and not origin.permissions.may_publish(topic):
            raise PermissionDenied(topic)
        router = self.router
        subscriptions, groups = router.cached(topic) or router.match(topic)
        delivered = 0
        for subscription in subscriptions:
            consumer = subscription.consumer
            if consumer is origin and not consumer.echo:
                continue
            if consumer.permissions is not None and not self._may_receive(consumer, message):
                continue
            consumer.deliver(message, subscription)
            delivered += 1
        for group in groups:
            member = group.pick(origin)
            if member is not None:
                consumer = member.consumer
                if consumer.permissions is not None and not self._may_receive(consumer, message):
                    continue
                consumer.deliver(message, member)
                delivered += 1
        return delivered

    @staticmethod
    def _may_receive(consumer, message) -> bool:
        permissions = consumer.permissions
        if not permissions.may_receive(message.topic):
            return False
        if message.reply_to is not None and message.origin is not consumer:
            permissions.note_reply(message.reply_to)
        return True
