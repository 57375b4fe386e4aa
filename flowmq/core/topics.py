"""Unified topics: the protocol-independent address model of FlowMQ.

A *topic* is a sequence of levels. Its canonical string form joins the levels
with ``/`` (MQTT style): ``sensors/room1/temperature``. A *topic filter* is a
topic whose levels may also be the wildcards ``+`` (exactly one level) and
``#`` (zero or more levels, at any position).

Every wire protocol converts its own addresses to and from this form (see
``flowmq/nats/subjects.py`` for NATS). A level value that a protocol's
grammar cannot express is written with a percent escape, ``%XX`` (two
upper-case hex digits, listed in ``ESCAPES``). Each grammar knows only the
escapes it needs, and the rule is reversible in every grammar:

- encoding writes ``%XX`` for each character the grammar cannot hold, and
  writes a literal ``%`` as ``%25`` only where it would otherwise be read as
  one of the grammar's escapes (so ``50%``, ``%zz`` and, in NATS, ``a%2Fb``
  stay as they are);
- decoding replaces only the grammar's escapes and leaves any other ``%``
  alone;
- some escapes stand only for a whole level: ``%00`` for an empty level in a
  grammar that has none, and (in NATS) ``%2A`` for a level that is just
  ``*``.

So ``decode(encode(level)) == level`` for every level value, and an address
that needed no escapes passes through another grammar byte for byte. The
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
    "2A": "*",
    "2B": "+",
    "2E": ".",
    "2F": "/",
    "3E": ">",
}
_CODE_OF = {char: "%" + code for code, char in ESCAPES.items() if char}
_EMPTY_LEVEL = "%00"


class InvalidTopic(ValueError):
    """An address that is not a valid topic, topic filter or native address."""


class LevelGrammar:
    """How one grammar writes a level value.

    ``always`` are characters escaped wherever they occur; ``alone`` are
    values escaped only when they make up the whole level (a NATS token that
    is just ``*`` would read as a wildcard, while ``a*b`` is a literal);
    ``empty_level`` says whether the grammar can hold an empty level.
    """

    def __init__(self, always: str, alone: tuple = (), empty_level: bool = True):
        self.always = always
        self.alone = frozenset(alone)
        self.empty_level = empty_level
        codes = "|".join(sorted(_CODE_OF[c][1:] for c in always + "%"))
        self._escape_re = re.compile("%(" + codes + ")")
        self._literal_percent_re = re.compile("%(?=" + codes + ")")
        self._needs_escape_re = re.compile("[" + re.escape(always + "%") + "]")
        # Whole-level escapes: the text of the level -> the value it stands for.
        self._whole = {_CODE_OF[value]: value for value in alone}
        if not empty_level:
            self._whole[_EMPTY_LEVEL] = ""

    def encode(self, value: str) -> str:
        """Write the level value ``value`` in this grammar."""
        if not value:
            return value if self.empty_level else _EMPTY_LEVEL
        if value in self.alone:
            return _CODE_OF[value]
        if value in self._whole:  # a literal "%2A" would read as the escape of "*"
            return "%25" + value[1:]
        if not self._needs_escape_re.search(value):
            return value
        value = self._literal_percent_re.sub("%25", value)
        return "".join(_CODE_OF[c] if c in self.always else c for c in value)

    def decode(self, text: str) -> str:
        """Read a level written in this grammar back to its value."""
        whole = self._whole.get(text)
        if whole is not None:
            return whole
        if "%" not in text:
            return text
        return self._escape_re.sub(lambda m: ESCAPES[m.group(1)], text)


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

