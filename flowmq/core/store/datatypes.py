"""The data types of the store interface: messages, limits, state, the limit error."""

from __future__ import annotations

MAX_MSGS = "maximum messages exceeded"
MAX_BYTES = "maximum bytes exceeded"
MAX_MSGS_PER_SUBJECT = "maximum messages per subject exceeded"
MAX_MSG_SIZE = "message size exceeds maximum allowed"
LAST_SEQ = "the stream is at its last sequence: it can take no more messages"
QUOTA_EXCEEDED = "quota exceeded"


class LimitExceeded(Exception):
    """An append refused by a limit; ``str(e)`` is one of the five messages above."""


class TooManyStreams(Exception):
    """A stream the storage engine cannot open: as many are open as its
    limit allows; ``str(e)`` names the limit."""


class StoredMessage:
    """One stored message. ``size`` is what it counts toward ``max_bytes``
    (see base.py: its record's size, or the store's sizer's figure);
    ``timestamp`` is when the store took it (ns since the epoch);
    ``properties`` is the message's Properties (flowmq.core.message) or None."""

    __slots__ = ("seq", "topic", "headers", "payload", "timestamp", "size", "properties")

    def __init__(self, seq, topic, headers, payload, timestamp, size, properties=None):
        self.seq = seq
        self.topic = topic
        self.headers = headers
        self.payload = payload
        self.timestamp = timestamp
        self.size = size
        self.properties = properties

    def __eq__(self, other):
        if not isinstance(other, StoredMessage):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self):
        return "<StoredMessage seq=%d %r %d bytes>" % (self.seq, self.topic, len(self.payload))


class Limits:
    """A stream's retention limits. -1 (or 0) means unlimited; ``max_age`` is
    in nanoseconds (0 = unlimited). ``discard_new``: refuse appends beyond
    ``max_msgs``/``max_bytes`` instead of dropping the oldest.
    ``discard_new_per_subject``: refuse appends beyond ``max_msgs_per_subject``
    instead of dropping the subject's oldest. ``max_msg_size`` is compared
    with the encoded headers plus the payload (as nats-server does)."""

    __slots__ = (
        "max_msgs",
        "max_bytes",
        "max_age",
        "max_msgs_per_subject",
        "max_msg_size",
        "discard_new",
        "discard_new_per_subject",
    )

    def __init__(
        self,
        max_msgs=-1,
        max_bytes=-1,
        max_age=0,
        max_msgs_per_subject=-1,
        max_msg_size=-1,
        discard_new=False,
        discard_new_per_subject=False,
    ):
        self.max_msgs = max_msgs
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_msgs_per_subject = max_msgs_per_subject
        self.max_msg_size = max_msg_size
        self.discard_new = discard_new
        self.discard_new_per_subject = discard_new_per_subject

    def __repr__(self):
        return "Limits(%s)" % ", ".join("%s=%r" % (name, getattr(self, name)) for name in self.__slots__)


class Quota:
    """The bytes that a group of stores hold together (``bytes``) and the
    most they may (``limit``; -1: no limit): JetStream's account limit on
    memory or on file storage. A store counts in one quota at most
    (``MessageStore.use_quota``); an append that would take ``bytes`` past
    ``limit`` is refused with ``QUOTA_EXCEEDED`` before anything is stored."""

    __slots__ = ("limit", "bytes")

    def __init__(self, limit: int = -1):
        self.limit = limit
        self.bytes = 0

    def __repr__(self):
        return "Quota(limit=%r, bytes=%r)" % (self.limit, self.bytes)


class StreamState:
    """A snapshot of a store's counters (see the module docstring for first_seq)."""

    __slots__ = (
        "messages",
        "bytes",
        "first_seq",
        "first_timestamp",
        "last_seq",
        "last_timestamp",
        "num_deleted",
        "num_subjects",
    )

    def __init__(self, **values):
        for name in self.__slots__:
            setattr(self, name, values.get(name, 0))

    def __eq__(self, other):
        if not isinstance(other, StreamState):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self):
        return "StreamState(%s)" % ", ".join("%s=%r" % (name, getattr(self, name)) for name in self.__slots__)
