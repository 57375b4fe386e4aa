"""NATS subjects <-> unified topics (the rule table is in README.md).

- A subject's tokens are the topic's levels: ``a.b.c`` <-> ``a/b/c``.
- In filters, ``*`` and FlowMQ's ``+`` are one level and a final ``>`` is one
  or more levels, which is the unified filter ``+/#`` (``a.>`` does not match
  ``a``, as in NATS).
- In a publish or reply subject every token is literal, wildcards included
  (nats-server outside pedantic mode): ``x.>`` is the topic ``x/>`` and is
  delivered as ``x.>`` again.
- A subject with an empty token (``a..b``, ``.a``, ``a.``) has no topic
  (``EmptyToken``): nats-server takes it in a publish but no subscription
  can match it, and the empty level is already NATS's ``%00``.
- A level value that a subject cannot hold (a ``.``, white space, an empty
  level) is percent-escaped, and a ``/``, ``+`` or ``#`` inside a NATS token
  is escaped on the topic side; see ``flowmq.core.topics`` for the rule,
  under which every subject comes back byte for byte.

Conversions of the same address repeat all the time, so both directions are
memoised in dicts bounded in entries and in key length.
"""

from __future__ import annotations

from flowmq.core.topics import (
    MULTI_LEVEL,
    SEPARATOR,
    SINGLE_LEVEL,
    TOPIC_LEVEL,
    InvalidTopic,
    LevelGrammar,
)

# What the protocol parser splits arguments on (bytes.split()): never in a subject.
_WHITE_SPACE = " \t\r\n\x0b\x0c"
_WHITE_SPACE_SET = frozenset(_WHITE_SPACE)

#: How a topic level value is written as a NATS token.
NATS_TOKEN = LevelGrammar("." + _WHITE_SPACE, empty_level=False)

# Characters that send a conversion down the slow, token-by-token path.
_SUBJECT_SPECIAL = frozenset("%/#+")
_TOPIC_SPECIAL = frozenset("%.")
# The memo of each direction: its entries, and the longest address it keeps.
_CACHE_LIMIT = 16384
_CACHE_KEY_LIMIT = 256


def _remember(cache: dict, key, value):
    if len(key) <= _CACHE_KEY_LIMIT:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()  # see Router.match: dropping the oldest one by one is O(n) per drop
        cache[key] = value
    return value


class EmptyToken(InvalidTopic):
    """A subject with an empty token: no subscription can match it."""


def _tokens(subject: str) -> list:
    if not subject or not _WHITE_SPACE_SET.isdisjoint(subject):
        raise InvalidTopic("invalid subject %r" % (subject,))
    tokens = subject.split(".")
    if "" in tokens:
        raise EmptyToken("empty token in subject %r" % (subject,))
    return tokens


def is_literal_subject(subject: bytes) -> bool:
    """Has the wire subject no wildcard token and no empty token (nats-server's
    IsValidLiteralSubject, which pedantic mode checks publish subjects with)?"""
    if not subject or subject[:1] == b"." or subject[-1:] == b"." or b".." in subject:
        return False  # an empty token
    if b"*" not in subject and b">" not in subject:
        return True  # the common case, without splitting
    tokens = subject.split(b".")
    return b"*" not in tokens and b">" not in tokens


#: Memo of subject_to_topic (wire subject -> topic); the hot path reads it
#: first and calls the function only on a miss.
TOPIC_OF_SUBJECT: dict = {}
_topics = TOPIC_OF_SUBJECT


def subject_to_topic(subject) -> str:
    """The topic a message published to ``subject`` (wire bytes or str) goes to.

    Wildcard tokens are literal levels. Raises EmptyToken for a subject with
    an empty token, InvalidTopic for white space or bytes that are not UTF-8.
    """
    topic = _topics.get(subject)
    if topic is not None:
        return topic
    key = subject
    if isinstance(subject, bytes):
        try:
            subject = subject.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidTopic("subject is not UTF-8: %r" % (subject,)) from None
    tokens = _tokens(subject)
    if _SUBJECT_SPECIAL.isdisjoint(subject):
        return _remember(_topics, key, SEPARATOR.join(tokens))
    topic = SEPARATOR.join(TOPIC_LEVEL.encode(NATS_TOKEN.decode(t)) for t in tokens)
    return _remember(_topics, key, topic)


def filter_to_topic_filter(subject: str) -> str:
    """The unified topic filter of a NATS subscription subject."""
    tokens = _tokens(subject)
    levels = []
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if token == "*" or token == "+":
            levels.append(SINGLE_LEVEL)
        elif token == ">":
            if index != last:
                raise InvalidTopic("'>' must be the last token of %r" % (subject,))
            levels.append(SINGLE_LEVEL)
            levels.append(MULTI_LEVEL)
        else:
            levels.append(TOPIC_LEVEL.encode(NATS_TOKEN.decode(token)))
    return SEPARATOR.join(levels)


#: Memo of topic_to_subject (topic -> wire subject), read first like TOPIC_OF_SUBJECT.
SUBJECT_OF_TOPIC: dict = {}
_subjects = SUBJECT_OF_TOPIC


def topic_to_subject(topic: str) -> bytes:
    """The NATS subject, as wire bytes, under which a message on ``topic`` is delivered."""
    subject = _subjects.get(topic)
    if subject is not None:
        return subject
    levels = topic.split(SEPARATOR)
    if _TOPIC_SPECIAL.isdisjoint(topic) and "" not in levels and _WHITE_SPACE_SET.isdisjoint(topic):
        text = ".".join(levels)
    else:
        text = ".".join(NATS_TOKEN.encode(TOPIC_LEVEL.decode(level)) for level in levels)
    return _remember(_subjects, topic, text.encode("utf-8"))
