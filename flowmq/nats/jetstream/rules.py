"""nats-server's publish rules for a stream, as ingest rules of its Log.

In the order nats-server applies them (stream.go processJetStreamMsg): a
sealed stream takes nothing; a ``Nats-Msg-Id`` (or, from another
protocol, a message id) seen within the duplicate window is a duplicate
(the core's Deduplicate rule, with this module's id source); then PublishHeaders: the ``Nats-Expected-*`` expectations, the
``Nats-Rollup`` header, and the stream's max_msg_size, which counts the NATS
header block.
A refusal is the ApiError the publisher gets in its error JSON.
"""

from __future__ import annotations

import json

from flowmq.core.streams.rules import IngestRule
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL
from flowmq.nats.convert import message_block_length
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.errors import ApiError

#: What a header value that is not text (a typed value of another protocol,
#: or of a NATS publish's ``FlowMQ-Types`` line) stands for in the rules: a
#: value no expectation matches and no rollup or number reads.
_NOT_TEXT = object()


def nats_msg_id(item):
    """The id a stream de-duplicates a Message or StoredMessage on, or None:
    its ``Nats-Msg-Id`` header when that is text, else its message_id
    property (what an AMQP message-id, say, becomes; a NATS publish's
    ``Nats-Msg-Id`` gives both)."""
    headers = item.headers
    if headers:
        msg_id = _text(headers, "Nats-Msg-Id")
        if type(msg_id) is str:
            return msg_id
    properties = item.properties
    return properties.message_id if properties is not None else None


def _text(headers, name: str):
    """The first value of header ``name`` (case-insensitive, as NATS headers
    are MIME headers): None if there is none, ``_NOT_TEXT`` if it is not a
    str (a None value too: a Kafka null header is there, with no text)."""
    if headers:
        lowered = name.lower()
        for key, value in headers:
            if key == name or key.lower() == lowered:
                return value if type(value) is str else _NOT_TEXT
    return None


class Sealed(IngestRule):
    """A sealed stream refuses every message."""

    def __init__(self, stream):
        self.stream = stream

    def check(self, log, message):
        if self.stream.config["sealed"]:
            raise ApiError(errors.STREAM_SEALED)
        return None


class PublishHeaders(IngestRule):
    """After de-duplication, in nats-server's order: the publish expectations
    (``Nats-Expected-*`` headers), the ``Nats-Rollup`` header (``sub`` keeps
    only this message of its subject, ``all`` only this message of the
    stream, when the stream allows rollups) and the stream's max_msg_size,
    over the header block and the payload as nats-server counts them (the
    block a NATS subscriber gets: with the lines of the message's
    properties). One rule, as they are one pass over the headers (every
    message pays for a rule). ``dedupe`` knows the last message's id.

    Only text header values are read: a typed one (from another protocol,
    or a NATS publish's ``FlowMQ-Types`` line) is a value that matches
    nothing and gets the rule's own error, never an exception."""

    def __init__(self, stream, dedupe):
        self.stream = stream
        self.dedupe = dedupe
        self._rollup = None  # the rollup of the message being taken in

    def check(self, log, message):
        headers = message.headers
        config = self.stream.config
        rollup = None
        if headers:
            self._check_expectations(log, message.topic, headers)
            rollup = _text(headers, "Nats-Rollup")
            if rollup:  # nats-server: an empty value is no rollup, and case does not matter
                if not config["allow_rollup_hdrs"] or config["deny_purge"]:
                    raise ApiError(errors.ROLLUP_FAILED, err="rollup not permitted")
                if rollup is _NOT_TEXT or rollup.lower() not in ("sub", "all"):
                    text = rollup if rollup is not _NOT_TEXT else "(not text)"
                    raise ApiError(errors.ROLLUP_FAILED, err="rollup value invalid: %s" % json.dumps(text))
                rollup = rollup.lower()
        self._rollup = rollup
        max_size = config["max_msg_size"]
        if max_size > 0 and len(message.payload) + message_block_length(message) > max_size:
            raise ApiError(errors.MESSAGE_TOO_BIG)
        return None

    def stored(self, log, message, seq: int, timestamp: int) -> None:
        rollup = self._rollup
        if rollup and log.store.purge(_rollup_filter(message.topic) if rollup == "sub" else None, keep=1):
            self.stream.service.purged(self.stream)

    def _check_expectations(self, log, topic: str, headers) -> None:
        """A value that is not text matches no expectation (a number that is
        not text is a bad request, as a text that is no number)."""
        expected = _text(headers, "Nats-Expected-Stream")
        if expected is not None and expected != self.stream.name:
            raise ApiError(errors.STREAM_NOT_MATCH)
        expected = _text(headers, "Nats-Expected-Last-Sequence")
        if expected is not None:
            last = log.store.state().last_seq
            if _as_int(expected) != last:
                raise ApiError(errors.WRONG_LAST_SEQUENCE, seq=last)
        expected = _text(headers, "Nats-Expected-Last-Subject-Sequence")
        if expected is not None:
            newest = log.store.last_message(topic)
            last = newest.seq if newest is not None else 0
            if _as_int(expected) != last:
                raise ApiError(errors.WRONG_LAST_SEQUENCE, seq=last)
        expected = _text(headers, "Nats-Expected-Last-Msg-Id")
        if expected is not None and expected != self.dedupe.last_id:
            raise ApiError(errors.WRONG_LAST_MSG_ID, id=self.dedupe.last_id)


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


def _as_int(text) -> int:
    """The number of an expectation's text; a bad request if it is none."""
    try:
        return int(text)
    except (TypeError, ValueError):  # TypeError: _NOT_TEXT
        raise ApiError(errors.BAD_REQUEST) from None
