"""Unified topics: the protocol-independent address model of FlowMQ.

A *topic* is a sequence of levels. Its canonical string form joins the levels
with ``/`` (MQTT style): ``sensors/room1/temperature``. A *topic filter* is a
topic whose levels may also be the wildcards ``+`` (exactly one level) and
``#`` (zero or more levels, at any position).

Every wire protocol converts its own addresses to and from this form (see
``flowmq/nats/subjects.py`` for NATS). A level value that a protocol's
grammar cannot express is written with a percent escape, ``%XX`` (two
upper-case hex digits, listed in ``ESCAPES``). Each grammar knows only the
escapes it needs, and the rule is a one-to-one correspondence between the
level values and the texts the grammar allows:

- encoding writes ``%XX`` for each character the grammar cannot hold, and
  writes a literal ``%`` as ``%25`` only where it would otherwise be read as
  an escape: where it is followed by one of the grammar's codes, possibly
  after any number of ``25`` (so ``50%``, ``%zz``, ``%25zz`` and, in NATS,
  ``a%2Fb`` stay as they are);
- decoding replaces only the grammar's codes, and reads ``%25`` as ``%``
  only where encoding would have written it (before a code, possibly after
  more ``25``); any other ``%`` is literal;
- a grammar without empty levels (NATS) writes the empty level as the whole
  level ``%00``, and a level that is literally ``%00`` (or ``%2500``, ...)
  with one more ``25``.

So ``decode(encode(value)) == value`` for every level value, and
``encode(decode(text)) == text`` for every text the grammar allows: an
address passes into another grammar and back byte for byte, and one that
needed no escapes passes through another grammar byte for byte. The
canonical topic grammar escapes ``/`` (the separator) and ``+`` and ``#``
(the wildcards, which a topic name may never contain).
"""

from __future__ import annotations

import re

SEPARATOR = "/"
SINGLE_LEVEL = "+"
MULTI_LEVEL = "#"

#: The escapes the unified-topic rule knows: code -> character ("" = empty level).
ESCAPES = {
    "00": "",
    "09": "\t",
    "0A": "\n",
    "0B": "\x0b",
    "0C": "\x0c",
    "0D": "\r",
    "20": " ",
    "23": "#",
    "25": "%",
    "2B": "+",
    "2E": ".",
    "2F": "/",
}
_CODE_OF = {char: "%" + code for code, char in ESCAPES.items() if char}
_PERCENT = _CODE_OF["%"]
# A whole level that stands for the empty level (group 1 empty) or, with one
# "25" fewer, for a literal "%00", "%2500", ... level.
_EMPTY_LEVEL_RE = re.compile(r"%((?:25)*)00")


class InvalidTopic(ValueError):
    """An address that is not a valid topic, topic filter or native address."""


class LevelGrammar:
    """How one grammar writes a level value.

    ``always`` are the characters it cannot hold, escaped wherever they
    occur; ``empty_level`` says whether it can hold an empty level.
    """

    def __init__(self, always: str, empty_level: bool = True):
        self.always = always
        self.empty_level = empty_level
        codes = "|".join(sorted(_CODE_OF[c][1:] for c in always))
        # What follows a "%" that would read as an escape: "25"s, then a code.
        escape_ahead = "(?=(?:25)*(?:%s))" % codes
        # Encoding: such a "%" becomes "%25", a character of ``always`` its code.
        self._encode_re = re.compile("%%%s|[%s]" % (escape_ahead, re.escape(always)))
        # Decoding: a code is its character; "%25" is "%" only before such text.
        self._decode_re = re.compile("%%(?:(%s)|25%s)" % (codes, escape_ahead))

    def encode(self, value: str) -> str:
        """Write the level value ``value`` in this grammar."""
        if not self.empty_level:
            if not value:
                return "%00"
            if _EMPTY_LEVEL_RE.fullmatch(value):
                return _PERCENT + value[1:]
        return self._encode_re.sub(_encode_match, value)

    def decode(self, text: str) -> str:
        """Read a level written in this grammar back to its value."""
        if "%" not in text:
            return text
        if not self.empty_level:
            whole = _EMPTY_LEVEL_RE.fullmatch(text)
            if whole:
                return "%" + whole.group(1)[2:] + "00" if whole.group(1) else ""
        return self._decode_re.sub(_decode_match, text)


def _encode_match(match) -> str:
    return _CODE_OF[match.group()]


def _decode_match(match) -> str:
    code = match.group(1)
    return ESCAPES[code] if code else "%"


#: The canonical topic grammar (identity for MQTT topic names).
TOPIC_LEVEL = LevelGrammar(SEPARATOR + SINGLE_LEVEL + MULTI_LEVEL)


def topic_from_levels(values) -> str:
    """Join level values into a canonical topic, escaping where needed."""
    return SEPARATOR.join(TOPIC_LEVEL.encode(v) for v in values)


def levels_of_topic(topic: str) -> list:
    """Split a canonical topic into its level values (the inverse of ``topic_from_levels``)."""
    return [TOPIC_LEVEL.decode(level) for level in topic.split(SEPARATOR)]


def is_wildcard_filter(topic_filter: str) -> bool:
    """True when the filter has a wildcard level, so it can match more than one topic."""
    return any(level in (SINGLE_LEVEL, MULTI_LEVEL) for level in topic_filter.split(SEPARATOR))


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid topic name (no wildcards), else raise InvalidTopic."""
    if not topic:
        raise InvalidTopic("empty topic")
    if SINGLE_LEVEL in topic or MULTI_LEVEL in topic:
        raise InvalidTopic("wildcard in topic name %r" % (topic,))
    return topic


def validate_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if every wildcard in it is a whole level, else raise InvalidTopic."""
    if not topic_filter:
        raise InvalidTopic("empty topic filter")
    for level in topic_filter.split(SEPARATOR):
        if level in (SINGLE_LEVEL, MULTI_LEVEL):
            continue
        if SINGLE_LEVEL in level or MULTI_LEVEL in level:
            raise InvalidTopic("wildcard inside level %r of %r" % (level, topic_filter))
    return topic_filter

