"""The JetStream service: owns the streams and consumers and keeps them on disk.

At start-up it reopens every file stream the storage engine has (the store
recovers the log; the stream's configuration and each durable consumer's
configuration and state are meta documents beside it), then listens on
``$JS.API.>`` (the API), ``$JS.ACK.>`` (acks) and ``$JS.FC.>`` (flow-control
answers). Consumer state is written at most every ``SAVE_DELAY`` seconds
and at shutdown, so a crash can redeliver what was acked in that window
(at-least-once), never lose a message.
"""

from __future__ import annotations

import time

from twisted.application import service

from flowmq.core.message import Message
from flowmq.core.filtertrie import FilterTrie
from flowmq.core.router import Subscription
from flowmq.core.topics import SEPARATOR, is_wildcard_filter
from flowmq.logs import logger
from flowmq.nats.jetstream.account import Account
from flowmq.nats.jetstream.api import JetStreamApi
from flowmq.nats.jetstream.consumer import Consumer
from flowmq.nats.jetstream.stream import Stream, store_limits
from flowmq.nats.jetstream.wire import dumps

log = logger("flowmq.jetstream")

SAVE_DELAY = 0.05
_STREAM_META = "stream"
_CONSUMER_META = "consumer."


class _Listener:
    """A router delivery target inside the broker (no echo rules, no permissions)."""

    echo = True
    permissions = None

    def __init__(self, deliver):
        self.deliver = deliver


class JetStream(service.Service):
    """The streams, their consumers and the API that manages them."""

    def __init__(self, broker, settings):
        self.broker = broker
        self.clock = broker.clock
        self.settings = settings.jetstream
        self.server_name = settings.broker.server_name
        self.streams: dict = {}
        #: Every stream's subjects (owner: the stream's name), for the overlap checks.
        self.subjects = FilterTrie()
        self.account = Account.from_settings(self.settings, settings.broker.data_dir)
        self.api = JetStreamApi(self)
        self._subscriptions: list = []
        self._by_ack_levels: dict = {}  # (stream level, consumer level) -> Consumer
        self._push: dict = {}  # deliver topic -> [Consumer]
        self._unsaved: dict = {}  # durable consumers whose state changed
        self._acking: dict = {}  # streams with PubAcks waiting for the store's write
        self._save_call = None

    # -- service --------------------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        storage = self.broker.storage
        for name in storage.stream_names():
            self._reopen(name)
        for topic_filter, target in (("$JS/API/#", self.api), ("$JS/ACK/#", _Listener(self._on_ack)),
                                     ("$JS/FC/#", _Listener(self._on_flow_control))):
            subscription = Subscription(target, topic_filter)
            self.broker.router.subscribe(subscription)
            self._subscriptions.append(subscription)
        self.broker.interest_watchers.append(self._interest)
        self.broker.after_sync.append(self._synced)
        log.info("JetStream ready: {streams} streams, {consumers} consumers",
                 streams=len(self.streams), consumers=self.consumer_count())

    def stopService(self):
        service.Service.stopService(self)
        self._save()
        self.broker.interest_watchers.remove(self._interest)
        self.broker.after_sync.remove(self._synced)
        for subscription in self._subscriptions:
            self.broker.router.unsubscribe(subscription)
        self._subscriptions = []
        for stream in self.streams.values():
            for consumer in stream.consumers.values():
                consumer.stop()
            stream.detach()

    def _reopen(self, name: str) -> None:
        storage = self.broker.storage
        meta = storage.read_meta(name, _STREAM_META)
        if meta is None:
            log.warn("stream directory {name!r} has no configuration; left alone", name=name)
            return
        config = meta["config"]
        stream = Stream(self, config, storage.open_stream(name, store_limits(config), "file"), meta["created"])
        self.streams[name] = stream
        stream.attach()
        for key in storage.meta_keys(name, _CONSUMER_META):
            document = storage.read_meta(name, key)
            try:
                consumer = Consumer(stream, document["config"], document["created"])
                consumer.restore(document["state"])
            except (TypeError, KeyError, ValueError):  # torn or from elsewhere: the others still start
                log.warn("stream {name}: consumer document {key} is unreadable; that consumer is left out",
                         name=name, key=key)
                continue
            self._add(stream, consumer)
        state = stream.store.state()
        log.info("stream {name}: {messages} messages, seq {first}..{last}, {consumers} consumers",
                 name=name, messages=state.messages, first=state.first_seq, last=state.last_seq,
                 consumers=len(stream.consumers))

    # -- streams --------------------------------------------------------------------

    def create_stream(self, config: dict) -> Stream:
        storage = self.broker.storage
        name = config["name"]
        created = time.time_ns()
        store = storage.open_stream(name, store_limits(config), config["storage"])
        stream = self.streams[name] = Stream(self, config, store, created)
        self._write_stream_meta(stream)
        stream.attach()
        log.info("stream {name} created on {subjects} ({storage})", name=name,
                 subjects=", ".join(config["subjects"]), storage=config["storage"])
        return stream

    def update_stream(self, stream, config: dict) -> None:
        stream.configure(config)
        for consumer in stream.consumers.values():
            consumer.configure(consumer.config)  # "covers the whole stream" may have changed
        self._write_stream_meta(stream)

    def purged(self, stream) -> None:
        """Messages went by purge: consumers forget them."""
        for consumer in list(stream.consumers.values()):
            consumer.prune()

    def _write_stream_meta(self, stream) -> None:
        if stream.config["storage"] == "file":
            self.broker.storage.write_meta(stream.name, _STREAM_META,
                                           {"config": stream.config, "created": stream.created})

    def delete_stream(self, stream) -> None:
        for name in list(stream.consumers):
            self.delete_consumer(stream, name)
        stream.detach()
        del self.streams[stream.name]
        stream.store.use_quota(None)
        self.broker.storage.remove_stream(stream.name)
        log.info("stream {name} deleted", name=stream.name)

    # -- consumers ------------------------------------------------------------------

    def consumer_count(self) -> int:
        return sum(len(stream.consumers) for stream in self.streams.values())

    def create_consumer(self, stream, config: dict) -> Consumer:
        consumer = Consumer(stream, config, time.time_ns())
        consumer.start_position()
        self._add(stream, consumer)
        self.consumer_changed(consumer)
        return consumer

    def update_consumer(self, consumer, config: dict) -> None:
        self._push_remove(consumer)
        consumer.configure(config)
        self._push_add(consumer)
        self.consumer_changed(consumer)
        consumer.pump()

    def _add(self, stream, consumer) -> None:
        stream.consumers[consumer.name] = consumer
        levels = consumer.ack_prefix_levels()
        self._by_ack_levels[levels] = consumer
        self._push_add(consumer)
        consumer.activate()

    def delete_consumer(self, stream, name: str) -> None:
        consumer = stream.consumers.pop(name, None)
        if consumer is None:
            return
        consumer.stop()
        stream.forget_interest(consumer.ack_floor_stream_seq + 1)
        self._by_ack_levels.pop(consumer.ack_prefix_levels(), None)
        self._push_remove(consumer)
        self._unsaved.pop(consumer, None)
        if consumer.durable and stream.config["storage"] == "file" and stream.name in self.streams:
            self.broker.storage.delete_meta(stream.name, _CONSUMER_META + name)

    def _push_add(self, consumer) -> None:
        if consumer.deliver_topic is not None:
            self._push.setdefault(consumer.deliver_topic, []).append(consumer)

    def _push_remove(self, consumer) -> None:
        consumers = self._push.get(consumer.deliver_topic)
        if consumers and consumer in consumers:
            consumers.remove(consumer)
            if not consumers:
                del self._push[consumer.deliver_topic]

    def consumer_changed(self, consumer) -> None:
        """A durable consumer's state changed: save it soon."""
        if consumer.durable and consumer.stream.config["storage"] == "file":
            self._unsaved[consumer] = None
            if self._save_call is None:
                self._save_call = self.clock.callLater(SAVE_DELAY, self._save)

    def _save(self) -> None:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        unsaved, self._unsaved = self._unsaved, {}
        storage = self.broker.storage
        for consumer in unsaved:
            if consumer.deleted:
                continue
            try:
                storage.write_meta(consumer.stream.name, _CONSUMER_META + consumer.name, {
                    "config": consumer.config, "created": consumer.created, "state": consumer.state()})
            except OSError as e:
                log.error("consumer {stream} > {name}: saving its state failed: {error}",
                          stream=consumer.stream.name, name=consumer.name, error=e)

    # -- the broker's side ------------------------------------------------------------

    def acks_waiting(self, stream) -> None:
        """``stream`` has PubAcks to send once its messages are written."""
        self._acking[stream] = None
        self.broker.batcher.need_sync()

    def _synced(self, failed: set) -> None:
        acking, self._acking = self._acking, {}
        for stream in acking:
            stream.release_acks(stream.store in failed)

    def reply(self, topic: str, document: dict) -> None:
        self.broker.publish(Message(topic, dumps(document)))

    def _interest(self, subscription) -> None:
        """A new subscription: a push consumer waiting for it may deliver now."""
        if not self._push:
            return
        if is_wildcard_filter(subscription.filter):
            waiting = [c for consumers in self._push.values() for c in consumers]
        else:
            waiting = self._push.get(subscription.filter, ())
        for consumer in list(waiting):
            consumer.pump()

    def _on_ack(self, message, subscription) -> None:
        """``$JS.ACK.<stream>.<consumer>.<n>.<stream seq>.<consumer seq>.<ns>.<pending>``."""
        levels = message.topic.split(SEPARATOR)
        consumer = self._by_ack_levels.get((levels[2], levels[3])) if len(levels) == 9 else None
        if consumer is None:
            return
        try:
            seq = int(levels[5])
        except ValueError:
            return
        try:
            consumer.acknowledge(seq, message.payload, message.reply_to)
        except Exception:  # a bug must cost one ack, not the client's connection
            log.failure("ack {topic} failed", topic=message.topic)
            return
        if message.reply_to is not None and not message.payload.startswith(b"+NXT"):
            self.broker.publish(Message(message.reply_to, b""))  # ack_sync waits for this

    def _on_flow_control(self, message, subscription) -> None:
        levels = message.topic.split(SEPARATOR)
        consumer = self._by_ack_levels.get((levels[2], levels[3])) if len(levels) == 5 else None
        if consumer is not None:
            try:
                consumer.flow_control_reply(message.topic)
            except Exception:  # a bug must cost one flow-control answer, not the client's connection
                log.failure("flow-control answer {topic} failed", topic=message.topic)
