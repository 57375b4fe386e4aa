"""A JetStream stream: the NATS adapter over a core Log.

The Log (flowmq.core.streams.log) is the stream's substance: its store,
the subjects it takes in (subscribed in the core router, so a message
published on them by any protocol is stored), retention, expiry and the
ingest rules. This adapter adds what is NATS's own: the configuration JSON,
nats-server's publish rules (rules.py: ``Nats-Msg-Id`` de-duplication,
``Nats-Expected-*``, ``Nats-Rollup``, max_msg_size over the header block),
the claims of its subjects for the overlap checks, and the answers: a
PubAck, or the error JSON, to the reply subject of a NATS publisher. As
nats-server, it answers only a NATS publisher: a message another protocol
published (an MQTT 5 response topic, an AMQP reply_to) is stored, and its
reply address is not the stream's to write to. A PubAck waits for the
store's write (the Log's ``written``): an acknowledged message is on its
way to disk first.

The Log is registered as ("jetstream", name) in the broker's registry, so a
later protocol reads the stream as a Log without importing this package.
"""

from __future__ import annotations

import functools
import time

from flowmq.core.message import Message
from flowmq.core.store import QUOTA_EXCEEDED, LimitExceeded, Limits
from flowmq.core.streams.log import Log
from flowmq.core.streams.rules import Deduplicate
from flowmq.core.topics import InvalidTopic
from flowmq.nats.convert import header_block_length
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.config import topic_filters
from flowmq.nats.jetstream.errors import ApiError
from flowmq.nats.jetstream.rules import PublishHeaders, Sealed, nats_msg_id
from flowmq.nats.jetstream.wire import dumps, rfc3339
from flowmq.nats.subjects import filter_to_topic_filter, topic_to_subject

#: The registry's kind of JetStream's logs (and the storage engine's namespace).
KIND = "jetstream"
#: The ``protocol`` of the publishing connection (message.origin) that the
#: stream answers: nats-server sends PubAcks to NATS reply subjects only.
NATS = "nats"
#: Most subjects a STREAM.INFO with subjects_filter lists (nats-server's limit too).
MAX_SUBJECT_DETAILS = 100_000
#: Configuration fields that nats-server's answers leave out when false (omitempty).
_OMITTED_IF_FALSE = frozenset(("no_ack", "discard_new_per_subject"))


def _memory_size(topic: str, headers, properties, payload_len: int) -> int:
    """A message's bytes in a memory stream: nats-server's memStoreMsgSize
    (subject + header block + payload + 16)."""
    return len(topic_to_subject(topic)) + header_block_length(headers, properties) + payload_len + 16


def _file_size(topic: str, headers, properties, payload_len: int) -> int:
    """A message's bytes in a file stream: nats-server's fileStoreMsgSize (its
    record: 22 bytes of lengths, sequence and time, the subject, the header
    block with its 4-byte length if there is one, the payload, an 8-byte hash)."""
    size = 22 + len(topic_to_subject(topic)) + payload_len + 8
    block = header_block_length(headers, properties)
    return size + 4 + block if block else size


#: The store's sizer by the stream's storage: state.bytes and max_bytes count
#: bytes as nats-server does (headers as the NATS block that clients get:
#: the headers with the lines of the message's properties).
STORE_SIZERS = {"memory": _memory_size, "file": _file_size}


def store_limits(config: dict) -> Limits:
    """The storage engine's limits for a stream configuration (max_msg_size
    is the stream's to check: it counts the NATS header block, see rules.py)."""
    return Limits(
        max_msgs=config["max_msgs"], max_bytes=config["max_bytes"], max_age=config["max_age"],
        max_msgs_per_subject=config["max_msgs_per_subject"],
        discard_new=config["discard"] == "new",
        discard_new_per_subject=config["discard_new_per_subject"])


class Stream:
    """One stream: its configuration, its Log, its consumers (the Log's)."""

    def __init__(self, service, config: dict, store, created: int):
        self.service = service
        self.broker = service.broker
        self.clock = service.clock
        self.name = config["name"]
        self.created = created
        self._ack_prefix = b'{"stream":' + dumps(self.name) + b',"seq":'
        self._dedupe = Deduplicate(nats_msg_id, config["duplicate_window"])
        rules = (Sealed(self), self._dedupe, PublishHeaders(self, self._dedupe))
        self.log = Log(KIND, self.name, store, self.broker, config["retention"], rules, answers=self)
        #: The consumers' view of the stream: its store and its consumers (the Log's).
        self.store = store
        self.consumers = self.log.consumers
        store.use_quota(service.account.quotas[config["storage"]])
        self.configure(config)

    # -- configuration --------------------------------------------------------

    def configure(self, config: dict) -> None:
        """Take a (new) configuration: subjects, limits, retention. An
        attached stream subscribes to the new subjects before anything else
        changes, so one the router refuses leaves it as it was."""
        log = self.log
        old_filters = log.filters if log.attached else ()
        old_window, self._dedupe.window = self._dedupe.window, config["duplicate_window"]
        try:
            log.configure(topic_filters(config["subjects"]), store_limits(config), config["retention"])
        except Exception:
            self._dedupe.window = old_window
            raise
        self.config = config
        if log.attached:
            self._release_subjects(old_filters)
            self._claim_subjects()

    def covers_all(self, topic_filters_) -> bool:
        """Do these consumer filters take in every subject of the stream?"""
        return self.log.covers_all(topic_filters_)

    def attach(self) -> None:
        """Start taking messages: the Log subscribes to the subjects, which
        are claimed in ``service.subjects``."""
        self.log.attach()
        self._claim_subjects()

    def detach(self) -> None:
        if self.log.attached:
            self._release_subjects(self.log.filters)
        self.log.detach()

    def _claim_subjects(self) -> None:
        """Enter the subscribed subjects in ``service.subjects`` (the overlap checks)."""
        for topic_filter in self.log.filters:
            self.service.subjects.add(topic_filter, self.name)

    def _release_subjects(self, filters) -> None:
        for topic_filter in filters:
            self.service.subjects.remove(topic_filter, self.name)

    # -- the Log's answers --------------------------------------------------

    def accepted(self, message, seq: int, duplicate: bool):
        """Stored (or a duplicate of ``seq``): a NATS publisher with a reply
        subject gets its PubAck once the store is written."""
        reply = message.reply_to
        if reply is None or self.config["no_ack"] or not _from_nats(message):
            return None
        if duplicate:
            ack = self._ack_prefix + b'%d,"duplicate":true}' % seq
        else:
            ack = self._ack_prefix + b"%d}" % seq
        return functools.partial(self._answer, reply, ack)

    def _answer(self, reply: str, ack: bytes, error) -> None:
        """The store was written (error None): the PubAck; or it failed: an
        error in its place, since what failed to reach the disk is not acknowledged."""
        if error is None:
            self.broker.publish(Message(reply, ack))
        else:
            self._reply_error(reply, ApiError(errors.STORE_FAILED, err="writing to disk failed"))

    def refused(self, message, error) -> None:
        """A rule or the store refused the message: a NATS publisher with a
        reply subject gets the error JSON at once."""
        reply = message.reply_to
        if reply is None or not _from_nats(message):
            return
        if isinstance(error, LimitExceeded):
            if str(error) == QUOTA_EXCEEDED:  # the account's max_memory / max_store
                error = ApiError(errors.ACCOUNT_RESOURCES_EXCEEDED)
            else:
                error = ApiError(errors.STORE_FAILED, err=str(error))
        elif not isinstance(error, ApiError):  # the store failed: refuse this message, keep the publisher
            error = ApiError(errors.STORE_FAILED, err="%s: %s" % (type(error).__name__, error))
        self._reply_error(reply, error)

    def _reply_error(self, reply: str, error: ApiError) -> None:
        self.service.reply(reply, {"error": error.as_json(), "stream": self.name})

    # -- the consumers' calls (retention by acknowledgement) ----------------

    def forget_interest(self, first: int) -> None:
        self.log.forget_interest(first)

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


def _from_nats(message) -> bool:
    """Did a NATS connection publish ``message``? (Only its reply subject is a stream's to answer.)"""
    return getattr(message.origin, "protocol", None) == NATS
