"""The JetStream service: owns the streams and consumers and keeps them on disk.

At start-up it reopens every file stream the storage engine has (the store
recovers the log; the stream's configuration is a meta document beside it,
each durable consumer has its own files: flowmq/core/streams/state.py), then
listens on ``$JS.API.>`` (the API), ``$JS.ACK.>`` (acks) and ``$JS.FC.>``
(flow-control answers). A durable consumer's configuration is written (and
synced) when it is created or updated; its state changes are appended to
its journal at most every ``SAVE_DELAY`` seconds and at shutdown, so a
crash can redeliver what was acked in that window (at-least-once), never
lose a message or the consumer. Consumer documents of earlier versions
(``meta/consumer.<name>.json``, config and whole state in one) are moved
to the new files at start-up.

A stream's configuration is checked again at start-up with the rules that
admitted it and today's settings (a lowered broker.max_topic_levels, the
open-file limit). One that fails, or a consumer whose document does not
make sense, is left out with an error naming it and why, and the rest are
served: start-up never fails for one stream. Such a stream's files are
kept; its name stays taken until STREAM.DELETE removes them (``unrestored``).

Creating and updating are all or nothing: everything is checked before
anything is stored, and a stream that cannot start leaves no files.
"""

from __future__ import annotations

import os
import time
from functools import partial

from twisted.application import service

from flowmq.core.message import Message
from flowmq.core.filtertrie import FilterTrie
from flowmq.core.interfaces import InternalTarget
from flowmq.core.router import Subscription
from flowmq.core.store import TooManyStreams
from flowmq.core.store.names import file_name, is_hashed, unsafe_name
from flowmq.core.streams.state import CONFIG_FILE, ConsumerFiles
from flowmq.core.topics import SEPARATOR, is_wildcard_filter
from flowmq.logs import logger
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.account import Account
from flowmq.nats.jetstream.api import JetStreamApi
from flowmq.nats.jetstream.config import stream_config
from flowmq.nats.jetstream.consumer import Consumer
from flowmq.nats.jetstream.errors import ApiError
from flowmq.nats.jetstream.stream import KIND, STORE_SIZERS, Stream, store_limits
from flowmq.nats.jetstream.wire import dumps

log = logger("flowmq.jetstream")

SAVE_DELAY = 0.05
_STREAM_META = "stream"
_CONSUMER_META = "consumer."


class _Listener(InternalTarget):
    """A router delivery target inside the broker that calls ``deliver``."""

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
        self.unrestored: dict = {}  # name -> why: file streams on disk that start-up left out
        #: Every stream's subjects (owner: the stream's name), for the overlap checks.
        self.subjects = FilterTrie()
        self.account = Account.from_settings(self.settings, settings.broker.data_dir)
        self.api = JetStreamApi(self)
        self._subscriptions: list = []
        self._by_ack_levels: dict = {}  # (stream level, consumer level) -> Consumer
        self._push: dict = {}  # deliver topic -> [Consumer]
        self._unsaved: dict = {}  # durable consumers whose state changed
        self._save_call = None

    # -- service --------------------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        storage = self.broker.storage
        for name in storage.stream_names(KIND):
            try:
                self._reopen(name)
            except Exception as e:  # one stream must never keep the broker from starting
                self._not_restored(name, e)
        for topic_filter, target in (("$JS/API/#", self.api), ("$JS/ACK/#", _Listener(self._on_ack)),
                                     ("$JS/FC/#", _Listener(self._on_flow_control))):
            subscription = Subscription(target, topic_filter)
            self.broker.router.subscribe(subscription)
            self._subscriptions.append(subscription)
        self.broker.interest_watchers.append(self._interest)
        file_streams = storage.max_file_streams
        self.account.log_limits()
        log.info("JetStream ready: {streams} streams, {consumers} consumers; at most {max_streams} streams "
                 "(jetstream.max_streams), {file_streams} of them on file (one open file each; "
                 "half of the open-file limit RLIMIT_NOFILE {nofile})",
                 streams=len(self.streams), consumers=self.consumer_count(), max_streams=self.settings.max_streams,
                 file_streams="all" if file_streams is None else min(file_streams, self.settings.max_streams),
                 nofile="unlimited" if file_streams is None else storage.open_file_limit)

    def stopService(self):
        service.Service.stopService(self)
        self._save()
        self.broker.interest_watchers.remove(self._interest)
        for subscription in self._subscriptions:
            self.broker.router.unsubscribe(subscription)
        self._subscriptions = []
        for stream in self.streams.values():
            for consumer in stream.consumers.values():
                consumer.stop()
            stream.detach()

    def _reopen(self, name: str) -> None:
        """Serve a file stream again, and its durable consumers. Raises, with
        nothing left open, if the stream cannot be served."""
        storage = self.broker.storage
        meta = storage.read_meta(KIND, name, _STREAM_META)
        if meta is None:
            log.warn("stream directory {name!r} has no configuration; left alone", name=name)
            return
        config, created = meta["config"], meta["created"]
        if config.get("name") != name or config.get("storage") != "file" or not isinstance(created, int):
            raise ValueError("its configuration document is not this stream's")
        stream = self._start_stream(stream_config(config, self.broker.router.max_levels), created,
                                    save=False, undo=partial(storage.close_stream, KIND))
        for key in storage.meta_keys(KIND, name, _CONSUMER_META):
            self._upgrade_consumer(stream, key)
        try:
            entries = sorted(os.listdir(storage.consumers_directory(KIND, name)))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            self._restore_consumer(stream, entry)
        state = stream.store.state()
        log.info("stream {name}: {messages} messages, seq {first}..{last}, {consumers} consumers",
                 name=name, messages=state.messages, first=state.first_seq, last=state.last_seq,
                 consumers=len(stream.consumers))

    def _not_restored(self, name: str, error: Exception) -> None:
        reason = str(error) if isinstance(error, (ApiError, TooManyStreams)) else "%s: %s" % (
            type(error).__name__, error)
        self.unrestored[name] = reason
        log.error("stream {name} not restored: {reason}; it is not served and its files are kept (fix the "
                  "settings and restart, or delete the stream)", name=name, reason=reason)

    def _consumer_files(self, stream_name: str, directory_entry: str) -> ConsumerFiles:
        storage = self.broker.storage
        return ConsumerFiles(os.path.join(storage.consumers_directory(KIND, stream_name), directory_entry), storage)

    def _upgrade_consumer(self, stream, key: str) -> None:
        """A consumer document of an earlier version (config and whole state
        in ``meta/consumer.<name>.json``) becomes the consumer's files; the
        document goes once they are written. One that cannot be read stays,
        with an error naming it (the consumer is left out)."""
        storage = self.broker.storage
        name = key[len(_CONSUMER_META):]
        try:
            files = self._consumer_files(stream.name, file_name(name))
            if not os.path.exists(os.path.join(files.directory, CONFIG_FILE)):  # else moved before a crash
                document = storage.read_meta(KIND, stream.name, key)
                if document is None:
                    raise ValueError("its document is unreadable")
                state = dict(document["state"])
                state["last_per_topic"] = state.pop("last_per_subject", [])
                files.create({"config": document["config"], "created": document["created"]}, state)
            storage.delete_meta(KIND, stream.name, key)
        except Exception as e:
            log.error("stream {name}: consumer {key} not restored: {reason}; it is left out",
                      name=stream.name, key=name, reason="%s: %s" % (type(e).__name__, e))

    def _restore_consumer(self, stream, entry: str) -> None:
        """A durable consumer from its files; one that cannot be restored is
        left out (its files stay) with an error naming it and why."""
        files = self._consumer_files(stream.name, entry)
        label = entry if is_hashed(entry) else unsafe_name(entry)
        consumer = None
        try:
            document = files.read_config()
            state = files.load("%s > %s" % (stream.name, label))
            consumer = Consumer(stream, document["config"], document["created"])
            consumer.restore(state)
            consumer.files = files
            self._add(stream, consumer)
        except Exception as e:  # torn, or from elsewhere: the others still start
            if consumer is not None:
                self._drop(stream, consumer)
            log.error("stream {name}: consumer {key} not restored: {reason}; it is left out",
                      name=stream.name, key=label, reason="%s: %s" % (type(e).__name__, e))

    # -- streams --------------------------------------------------------------------

    def create_stream(self, config: dict) -> Stream:
        """Open, save and attach a new stream; if any step fails (TooManyStreams,
        OSError ...) nothing is left of it, on disk or in the router."""
        stream = self._start_stream(config, time.time_ns(), save=True,
                                    undo=partial(self.broker.storage.remove_stream, KIND))
        log.info("stream {name} created on {subjects} ({storage})", name=config["name"],
                 subjects=", ".join(config["subjects"]), storage=config["storage"])
        return stream

    def _start_stream(self, config: dict, created: int, save: bool, undo) -> Stream:
        """Open the stream's store, save its configuration if ``save``, and
        attach it to the router; if a step fails, ``undo(name)`` (close or
        remove the store) and re-raise, leaving nothing in the router."""
        name = config["name"]
        store = stream = None
        try:
            store = self.broker.storage.open_stream(KIND, name, store_limits(config), config["storage"],
                                                    STORE_SIZERS[config["storage"]])
            stream = Stream(self, config, store, created)
            if save:
                self._write_stream_meta(stream, config)
            stream.attach()
        except Exception:
            if stream is not None:
                stream.detach()
            if store is not None:
                store.use_quota(None)  # its bytes must not count against the other streams
            undo(name)
            raise
        self.streams[name] = stream
        return stream

    def update_stream(self, stream, config: dict) -> None:
        """Save, then apply a checked configuration: a failed save (OSError)
        changes nothing, and so does a failed apply (the old one is saved again)."""
        old = stream.config
        self._write_stream_meta(stream, config)
        try:
            stream.configure(config)
        except Exception:
            self._write_stream_meta(stream, old)
            raise
        for consumer in stream.consumers.values():
            consumer.configure(consumer.config)  # "covers the whole stream" may have changed

    def purged(self, stream) -> None:
        """Messages went by purge: consumers forget them."""
        for consumer in list(stream.consumers.values()):
            consumer.prune()

    def _write_stream_meta(self, stream, config: dict) -> None:
        if config["storage"] == "file":
            self.broker.storage.write_meta(KIND, stream.name, _STREAM_META, {"config": config, "created": stream.created})

    def delete_stream(self, stream) -> None:
        for name in list(stream.consumers):
            self.delete_consumer(stream, name)
        stream.detach()
        del self.streams[stream.name]
        stream.store.use_quota(None)
        self.broker.storage.remove_stream(KIND, stream.name)
        log.info("stream {name} deleted", name=stream.name)

    def delete_unrestored(self, name: str) -> None:
        """STREAM.DELETE of a stream that start-up left out: its files go."""
        del self.unrestored[name]
        self.broker.storage.remove_stream(KIND, name)
        log.info("stream {name} (not restored) deleted", name=name)

    # -- consumers ------------------------------------------------------------------

    def consumer_count(self) -> int:
        return sum(len(stream.consumers) for stream in self.streams.values())

    def create_consumer(self, stream, config: dict) -> Consumer:
        """A new consumer; a durable one of a file stream has its files
        written first (nothing is left of it if that fails)."""
        consumer = Consumer(stream, config, time.time_ns())
        consumer.start_position()
        if self._persisted(consumer):
            files = self._consumer_files(stream.name, file_name(consumer.name))
            try:
                files.create({"config": config, "created": consumer.created}, consumer.state())
            except OSError as e:
                files.remove()
                raise ApiError(errors.CONSUMER_CREATE, err=str(e)) from None
            consumer.files = files
        self._add(stream, consumer)
        return consumer

    def update_consumer(self, consumer, config: dict) -> None:
        """Save, then apply a checked configuration (a failed save changes nothing)."""
        if consumer.files is not None:
            try:
                consumer.files.write_config({"config": config, "created": consumer.created})
            except OSError as e:
                raise ApiError(errors.CONSUMER_CREATE, err=str(e)) from None
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

    def _drop(self, stream, consumer) -> None:
        """Take a consumer out of service (its saved document is left alone)."""
        consumer.stop()
        if stream.consumers.get(consumer.name) is consumer:
            del stream.consumers[consumer.name]
        levels = consumer.ack_prefix_levels()
        if self._by_ack_levels.get(levels) is consumer:
            del self._by_ack_levels[levels]
        self._push_remove(consumer)
        self._unsaved.pop(consumer, None)

    def delete_consumer(self, stream, name: str) -> None:
        consumer = stream.consumers.get(name)
        if consumer is None:
            return
        self._drop(stream, consumer)
        stream.forget_interest(consumer.ack_floor_stream_seq + 1)
        if consumer.files is not None and stream.name in self.streams:
            consumer.files.remove()

    def _push_add(self, consumer) -> None:
        if consumer.deliver_topic is not None:
            self._push.setdefault(consumer.deliver_topic, []).append(consumer)

    def _push_remove(self, consumer) -> None:
        consumers = self._push.get(consumer.deliver_topic)
        if consumers and consumer in consumers:
            consumers.remove(consumer)
            if not consumers:
                del self._push[consumer.deliver_topic]

    @staticmethod
    def _persisted(consumer) -> bool:
        return consumer.durable and consumer.stream.config["storage"] == "file"

    def consumer_changed(self, consumer) -> None:
        """A durable consumer's state changed: save it soon."""
        if consumer.files is not None:
            self._unsaved[consumer] = None
            if self._save_call is None:
                self._save_call = self.clock.callLater(SAVE_DELAY, self._save)

    def _save(self) -> None:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        unsaved, self._unsaved = self._unsaved, {}
        with self.broker.storage.one_sync():  # the journals' fsyncs: one worker job for the round
            for consumer in unsaved:
                if consumer.deleted:
                    continue
                try:
                    consumer.files.save(consumer.delta(), consumer.state)
                except OSError as e:
                    log.error("consumer {stream} > {name}: saving its state failed: {error}",
                              stream=consumer.stream.name, name=consumer.name, error=e)

    # -- the broker's side ------------------------------------------------------------

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

    def _on_ack(self, message, subscriptions) -> None:
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

    def _on_flow_control(self, message, subscriptions) -> None:
        levels = message.topic.split(SEPARATOR)
        consumer = self._by_ack_levels.get((levels[2], levels[3])) if len(levels) == 5 else None
        if consumer is not None:
            try:
                consumer.flow_control_reply(message.topic)
            except Exception:  # a bug must cost one flow-control answer, not the client's connection
                log.failure("flow-control answer {topic} failed", topic=message.topic)

