"""A JetStream stream: a Stream destination of the core router.

The stream subscribes to its subjects in the router like any consumer, so a
message published on them by any protocol is stored, not only NATS ones. For
each message it applies nats-server's publish rules (de-duplication by
``Nats-Msg-Id`` within the duplicate window, the ``Nats-Expected-*``
expectations, ``Nats-Rollup``), appends it to its store and, when the
message has a reply topic, answers with the PubAck JSON. The PubAck is only
queued here: the broker writes the store before any output goes out (see
WriteBatcher), so an acknowledged message is on its way to disk first.

Retention: limits (the store's), interest (a message goes once every
consumer that wants it has acknowledged it) or work-queue (once one
consumer has).
"""

from __future__ import annotations

import collections
import json
import time

from flowmq.core.message import Message
from flowmq.core.router import Subscription
from flowmq.core.store import QUOTA_EXCEEDED, LimitExceeded, Limits
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, InvalidTopic
from flowmq.logs import logger
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.config import topic_filters
from flowmq.nats.jetstream.errors import ApiError
from flowmq.nats.jetstream.wire import dumps, header_block_length, header_value, rfc3339
from flowmq.nats.subjects import filter_to_topic_filter, topic_to_subject

log = logger("flowmq.jetstream")

#: Most subjects a STREAM.INFO with subjects_filter lists (nats-server's limit too).
MAX_SUBJECT_DETAILS = 100_000
#: Configuration fields that nats-server's answers leave out when false (omitempty).
_OMITTED_IF_FALSE = frozenset(("no_ack", "discard_new_per_subject"))


def _memory_size(topic: str, headers, payload_len: int) -> int:
    """A message's bytes in a memory stream: nats-server's memStoreMsgSize
    (subject + header block + payload + 16)."""
    return len(topic_to_subject(topic)) + header_block_length(headers) + payload_len + 16


def _file_size(topic: str, headers, payload_len: int) -> int:
    """A message's bytes in a file stream: nats-server's fileStoreMsgSize (its
    record: 22 bytes of lengths, sequence and time, the subject, the header
    block with its 4-byte length if there is one, the payload, an 8-byte hash)."""
    size = 22 + len(topic_to_subject(topic)) + payload_len + 8
    return size + 4 + header_block_length(headers) if headers else size


#: The store's sizer by the stream's storage: state.bytes and max_bytes count
#: bytes as nats-server does (headers as the NATS block clients send).
STORE_SIZERS = {"memory": _memory_size, "file": _file_size}


def store_limits(config: dict) -> Limits:
    """The storage engine's limits for a stream configuration (max_msg_size
    is the stream's to check: it counts the NATS header block, see ingest)."""
    return Limits(
        max_msgs=config["max_msgs"], max_bytes=config["max_bytes"], max_age=config["max_age"],
        max_msgs_per_subject=config["max_msgs_per_subject"],
        discard_new=config["discard"] == "new",
        discard_new_per_subject=config["discard_new_per_subject"])


class Stream:
    """One stream: its configuration, its store, its consumers."""

    # As a delivery target of the router: every message, nobody's permissions.
    echo = True
    permissions = None

    def __init__(self, service, config: dict, store, created: int):
        self.service = service
        self.broker = service.broker
        self.clock = service.clock
        self.name = config["name"]
        self.store = store
        self.created = created
        self.consumers: dict = {}
        self._subscriptions: list = []
        self._recent_ids: collections.OrderedDict = collections.OrderedDict()  # msg id -> (seq, ns), oldest first
        self._last_msg_id = ""
        self._expiry = None
        self._acks: list = []  # (reply topic, PubAck) waiting for the store's write
        self._ack_prefix = b'{"stream":' + dumps(self.name) + b',"seq":'
        store.on_remove = self._removed
        store.use_quota(service.account.quotas[config["storage"]])
        self.configure(config)

    # -- configuration --------------------------------------------------------

    def configure(self, config: dict) -> None:
        """Take a (new) configuration: limits, subjects, expiry timer. An
        attached stream subscribes to the new subjects before anything else
        changes, so one the router refuses leaves it as it was."""
        filters = topic_filters(config["subjects"])
        attached = bool(self._subscriptions)
        if attached:
            subscriptions = self._subscribe(filters)
            self.detach()
            self._subscriptions = subscriptions
            self._claim_subjects()
        self.config = config
        self.filters = filters
        self.store.update_limits(store_limits(config))
        if attached:
            self._restore_recent_ids()
            self._schedule_expiry()

    def covers_all(self, topic_filters_) -> bool:
        """Do these consumer filters take in every subject of the stream?"""
        return not topic_filters_ or set(topic_filters_) >= set(self.filters)

    def attach(self) -> None:
        """Start taking messages: subscribe to the subjects (and claim them
        in ``service.subjects``), start expiring."""
        self._subscriptions = self._subscribe(self.filters)
        self._claim_subjects()
        self._restore_recent_ids()
        self._schedule_expiry()

    def _subscribe(self, filters) -> list:
        """Subscriptions of the stream to ``filters``, all or none: if the
        router refuses one (InvalidTopic), those made are undone."""
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

    def _claim_subjects(self) -> None:
        """Enter the subscribed subjects in ``service.subjects`` (the overlap checks)."""
        for subscription in self._subscriptions:
            self.service.subjects.add(subscription.filter, self.name)

    def detach(self) -> None:
        for subscription in self._subscriptions:
            self.broker.router.unsubscribe(subscription)
            self.service.subjects.remove(subscription.filter, self.name)
        self._subscriptions = []
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    def _schedule_expiry(self) -> None:
        max_age = self.config["max_age"]
        if max_age and self._expiry is None:
            self._expiry = self.clock.callLater(min(1.0, max_age / 1e9), self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self.store.expire(time.time_ns())
        self._schedule_expiry()

    # -- publishing -----------------------------------------------------------

    def deliver(self, message, subscription) -> None:
        """The router hands over a message published on one of our subjects."""
        reply = message.reply_to
        try:
            ack, seq = self.ingest(message)
        except ApiError as e:
            if reply is not None:
                self.service.reply(reply, {"error": e.as_json(), "stream": self.name})
            return
        except Exception as e:  # the store failed: refuse this message, keep the publisher
            log.failure("stream {name}: storing a message on {topic} failed", name=self.name, topic=message.topic)
            if reply is not None:
                failed = ApiError(errors.STORE_FAILED, err="%s: %s" % (type(e).__name__, e))
                self.service.reply(reply, {"error": failed.as_json(), "stream": self.name})
            return
        if seq:
            self._appended(seq, message.topic)
        if reply is not None and not self.config["no_ack"]:
            self._acks.append((reply, ack, seq))
            self.service.acks_waiting(self)

    def ingest(self, message) -> bytes:
        """Store one message; returns the PubAck JSON and the new seq (0 for a
        duplicate), raises ApiError if refused."""
        config = self.config
        if config["sealed"]:
            raise ApiError(errors.STREAM_SEALED)
        headers = message.headers
        msg_id = rollup = None
        if headers:
            msg_id = header_value(headers, "Nats-Msg-Id")
            if msg_id:
                seen = self._duplicate_of(msg_id)
                if seen:
                    return self._ack_prefix + b'%d,"duplicate":true}' % seen, 0
            self._check_expectations(message.topic, headers)
            rollup = header_value(headers, "Nats-Rollup")
            if rollup:  # nats-server: an empty value is no rollup, and case does not matter
                rollup = rollup.lower()
                if not config["allow_rollup_hdrs"] or config["deny_purge"]:
                    raise ApiError(errors.ROLLUP_FAILED, err="rollup not permitted")
                if rollup not in ("sub", "all"):
                    raise ApiError(errors.ROLLUP_FAILED, err="rollup value invalid: %s" % json.dumps(rollup))
        max_size = config["max_msg_size"]
        if max_size > 0 and len(message.payload) + header_block_length(headers) > max_size:
            raise ApiError(errors.MESSAGE_TOO_BIG)  # nats-server: header block + payload
        try:
            seq, timestamp = self.store.append(message.topic, headers or None, message.payload)
        except LimitExceeded as e:
            if str(e) == QUOTA_EXCEEDED:  # the account's max_memory / max_store
                raise ApiError(errors.ACCOUNT_RESOURCES_EXCEEDED) from None
            raise ApiError(errors.STORE_FAILED, err=str(e)) from None
        if rollup and self.store.purge(_rollup_filter(message.topic) if rollup == "sub" else None, keep=1):
            self.service.purged(self)
        if msg_id:
            self._remember_id(msg_id, seq, timestamp)
        else:
            self._last_msg_id = ""  # nats-server: the last message's id, "" when it had none
        return self._ack_prefix + b"%d}" % seq, seq

    def _check_expectations(self, topic: str, headers) -> None:
        """nats-server's publish expectations (Nats-Expected-* headers)."""
        expected = header_value(headers, "Nats-Expected-Stream")
        if expected is not None and expected != self.name:
            raise ApiError(errors.STREAM_NOT_MATCH)
        expected = header_value(headers, "Nats-Expected-Last-Sequence")
        if expected is not None:
            last = self.store.state().last_seq
            if _as_int(expected) != last:
                raise ApiError(errors.WRONG_LAST_SEQUENCE, seq=last)
        expected = header_value(headers, "Nats-Expected-Last-Subject-Sequence")
        if expected is not None:
            newest = self.store.last_message(topic)
            last = newest.seq if newest is not None else 0
            if _as_int(expected) != last:
                raise ApiError(errors.WRONG_LAST_SEQUENCE, seq=last)
        expected = header_value(headers, "Nats-Expected-Last-Msg-Id")
        if expected is not None and expected != self._last_msg_id:
            raise ApiError(errors.WRONG_LAST_MSG_ID, id=self._last_msg_id)

    def _duplicate_of(self, msg_id: str) -> int:
        """The seq stored under ``msg_id`` within the duplicate window, or 0."""
        self._forget_old_ids(time.time_ns())
        seen = self._recent_ids.get(msg_id)
        return seen[0] if seen is not None else 0

    def _remember_id(self, msg_id: str, seq: int, timestamp: int) -> None:
        self._recent_ids[msg_id] = (seq, timestamp)
        self._recent_ids.move_to_end(msg_id)
        self._last_msg_id = msg_id

    def _forget_old_ids(self, now: int) -> None:
        oldest = now - self.config["duplicate_window"]
        recent = self._recent_ids
        while recent:
            msg_id, (seq, timestamp) = next(iter(recent.items()))
            if timestamp >= oldest:
                break
            del recent[msg_id]

    def _restore_recent_ids(self) -> None:
        """After a restart: the message ids of the duplicate window, from the store."""
        seq = self.store.seq_for_time(time.time_ns() - self.config["duplicate_window"])
        while True:
            stored = self.store.next_message(seq)
            if stored is None:
                return
            msg_id = header_value(stored.headers, "Nats-Msg-Id")
            if msg_id:
                self._remember_id(msg_id, stored.seq, stored.timestamp)
            seq = stored.seq + 1

    def _appended(self, seq: int, topic: str) -> None:
        if self.config["retention"] == "interest" and not any(c.wants(topic) for c in self.consumers.values()):
            self.store.delete(seq)  # an interest stream keeps nothing nobody wants
            return
        for consumer in list(self.consumers.values()):
            consumer.on_append(topic)

    def release_acks(self, failed: bool, count: int) -> None:
        """The store was written (or not): send the oldest ``count`` waiting
        PubAcks, or errors in their place, since what failed to reach the
        disk is not acknowledged."""
        acks, self._acks = self._acks[:count], self._acks[count:]
        if failed:
            # Refused means not stored: the messages go (a retry must not
            # make a second copy), and so do their ids in the duplicate window.
            refused = {seq for _reply, _ack, seq in acks if seq}
            for seq in refused:
                self.store.delete(seq)
            for msg_id, (seq, _timestamp) in list(self._recent_ids.items()):
                if seq in refused:
                    del self._recent_ids[msg_id]
            error = {"error": ApiError(errors.STORE_FAILED, err="writing to disk failed").as_json(),
                     "stream": self.name}
            for reply, _ack, _seq in acks:
                self.service.reply(reply, error)
        else:
            publish = self.broker.publish
            for reply, ack, _seq in acks:
                publish(Message(reply, ack))

    def _removed(self, seq: int, topic: str) -> None:
        for consumer in self.consumers.values():
            consumer.on_removed(seq, topic)

    # -- retention by acknowledgement -----------------------------------------

    def acknowledged(self, consumer, seqs) -> None:
        """``consumer`` acknowledged the messages ``seqs``; interest and
        work-queue streams drop those that nobody else still needs."""
        retention = self.config["retention"]
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
        stream drops the messages from ``first`` on that nobody left wants
        (those below were acknowledged by it, so kept only for others)."""
        if self.config["retention"] != "interest":
            return
        consumers = list(self.consumers.values())
        seq = first
        while True:
            stored = self.store.next_message(seq)
            if stored is None:
                return
            seq = stored.seq + 1
            if all(c.has_acknowledged(stored.seq) for c in consumers if c.wants(stored.topic)):
                self.store.delete(stored.seq)

    # -- views ----------------------------------------------------------------

    def info(self) -> dict:
        """The stream as STREAM.CREATE, UPDATE and LIST answer it (nats-server's
        StreamInfo; STREAM.INFO adds the cluster and subject details), without
        the fields nats-server leaves out when they are zero or false."""
        state = self.store.state()
        document = {
            "messages": state.messages, "bytes": state.bytes,
            "first_seq": state.first_seq, "first_ts": rfc3339(state.first_timestamp),
            "last_seq": state.last_seq, "last_ts": rfc3339(state.last_timestamp),
            "consumer_count": len(self.consumers),
        }
        if state.num_deleted:
            document["num_deleted"] = state.num_deleted
        if state.num_subjects:
            document["num_subjects"] = state.num_subjects
        config = {key: value for key, value in self.config.items() if value is not False or key not in _OMITTED_IF_FALSE}
        return {"config": config, "created": rfc3339(self.created), "state": document, "ts": rfc3339(time.time_ns())}

    def subjects(self, subjects_filter: str, offset: int):
        """``(subject -> messages, how many subjects match)`` for STREAM.INFO's
        subjects_filter: at most MAX_SUBJECT_DETAILS from ``offset`` on, in
        the order of the subjects when more than one page is asked for (as
        nats-server pages them). A filter no subject can match matches none."""
        try:
            counts = self.store.topics(filter_to_topic_filter(subjects_filter))
        except InvalidTopic:
            return {}, 0
        total = len(counts)
        if offset == 0 and total <= MAX_SUBJECT_DETAILS:
            return {topic_to_subject(topic).decode(): count for topic, count in counts.items()}, total
        subjects = sorted((topic_to_subject(topic).decode(), count) for topic, count in counts.items())
        return dict(subjects[offset:offset + MAX_SUBJECT_DETAILS]), total


def _rollup_filter(topic: str) -> str:
    """What a "sub" rollup purges: nats-server purges the message's subject
    as a filter, and a published subject may hold '*' and a last '>' (nats-server
    takes them; FlowMQ keeps them as levels), which match there as wildcards."""
    levels = topic.split(SEPARATOR)
    if "*" not in levels and levels[-1] != ">":
        return topic
    levels = [SINGLE_LEVEL if level == "*" else level for level in levels]
    if levels[-1] == ">":
        levels[-1:] = [SINGLE_LEVEL, MULTI_LEVEL]
    return SEPARATOR.join(levels)


def _as_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(errors.BAD_REQUEST) from None
