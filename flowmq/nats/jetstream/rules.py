"""nats-server's publish rules for a stream, as ingest rules of its Log.

In the order nats-server applies them (stream.go processJetStreamMsg): a
sealed stream takes nothing; a ``Nats-Msg-Id`` seen within the duplicate
window is a duplicate (the core's Deduplicate rule, with this module's id
source); then the ``Nats-Expected-*`` expectations, the ``Nats-Rollup``
header, and the stream's max_msg_size, which counts the NATS header block.
A refusal is the ApiError the publisher gets in its error JSON.
"""

from __future__ import annotations

import json

from flowmq.core.streams.rules import IngestRule
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.errors import ApiError
from flowmq.nats.jetstream.wire import header_block_length, header_value


def nats_msg_id(item):
    """The ``Nats-Msg-Id`` of a Message or StoredMessage, or None."""
    headers = item.headers
    return header_value(headers, "Nats-Msg-Id") if headers else None


class Sealed(IngestRule):
    """A sealed stream refuses every message."""

    def __init__(self, stream):
        self.stream = stream

    def check(self, log, message):
        if self.stream.config["sealed"]:
            raise ApiError(errors.STREAM_SEALED)
        return None


class Expectations(IngestRule):
    """nats-server's publish expectations (``Nats-Expected-*`` headers);
    ``dedupe`` knows the last message's id."""

    def __init__(self, stream, dedupe):
        self.stream = stream
        self.dedupe = dedupe

    def check(self, log, message):
        headers = message.headers
        if not headers:
            return None
        expected = header_value(headers, "Nats-Expected-Stream")
        if expected is not None and expected != self.stream.name:
            raise ApiError(errors.STREAM_NOT_MATCH)
        expected = header_value(headers, "Nats-Expected-Last-Sequence")
        if expected is not None:
            last = log.store.state().last_seq
            if _as_int(expected) != last:
                raise ApiError(errors.WRONG_LAST_SEQUENCE, seq=last)
        expected = header_value(headers, "Nats-Expected-Last-Subject-Sequence")
        if expected is not None:
            newest = log.store.last_message(message.topic)
            last = newest.seq if newest is not None else 0
            if _as_int(expected) != last:
                raise ApiError(errors.WRONG_LAST_SEQUENCE, seq=last)
        expected = header_value(headers, "Nats-Expected-Last-Msg-Id")
        if expected is not None and expected != self.dedupe.last_id:
            raise ApiError(errors.WRONG_LAST_MSG_ID, id=self.dedupe.last_id)
        return None


class Rollup(IngestRule):
    """``Nats-Rollup: sub`` keeps only this message of its subject, ``all``
    only this message of the stream (when the stream allows rollups)."""

    def __init__(self, stream):
        self.stream = stream

    def check(self, log, message):
        rollup = _rollup(message)
        if rollup:
            config = self.stream.config
            if not config["allow_rollup_hdrs"] or config["deny_purge"]:
                raise ApiError(errors.ROLLUP_FAILED, err="rollup not permitted")
            if rollup not in ("sub", "all"):
                raise ApiError(errors.ROLLUP_FAILED, err="rollup value invalid: %s" % json.dumps(rollup))
        return None

    def stored(self, log, message, seq: int, timestamp: int) -> None:
        rollup = _rollup(message)
        if rollup and log.store.purge(_rollup_filter(message.topic) if rollup == "sub" else None, keep=1):
            self.stream.service.purged(self.stream)


class MaxMessageSize(IngestRule):
    """The stream's max_msg_size, over the header block and the payload as
    nats-server counts them."""

    def __init__(self, stream):
        self.stream = stream

    def check(self, log, message):
        max_size = self.stream.config["max_msg_size"]
        if max_size > 0 and len(message.payload) + header_block_length(message.headers) > max_size:
            raise ApiError(errors.MESSAGE_TOO_BIG)
        return None


def _rollup(message):
    """The message's rollup, lower case (nats-server: an empty value is no
    rollup, and case does not matter), or None."""
    headers = message.headers
    rollup = header_value(headers, "Nats-Rollup") if headers else None
    return rollup.lower() if rollup else None


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
