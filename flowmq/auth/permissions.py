"""What an authenticated user may publish to, subscribe to and receive.

Permissions are lists of unified topic filters (``flowmq/core/topics.py``:
levels separated by ``/``, ``+`` one level, ``#`` zero or more levels; the
NATS subject ``orders.>`` is the filter ``orders/+/#``). They follow the
``permissions`` block of a nats-server user:

- an allow list of ``None`` allows everything, an empty one nothing;
- deny wins over allow;
- a subscription is allowed when an allow filter *covers* the requested
  filter (every topic it can match) and no deny filter covers it; a
  wildcard subscription that is allowed still gets no message on a topic
  that a subscribe-deny filter matches (``may_receive``, nats-server's
  per-delivery deny check);
- ``allow_responses`` lets a user answer a request it received even where it
  may not publish otherwise, once per request (nats-server's default
  ``max: 1``).
"""

from __future__ import annotations

import collections

from flowmq.core.router import filter_matches
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, validate_filter

#: How many reply topics an ``allow_responses`` session remembers at most.
DEFAULT_MAX_RESPONSES = 1_000
#: Publish decisions remembered per Permissions (nats-server keeps a
#: per-client publish permission cache of 128 entries).
_PUBLISH_CACHE_SIZE = 256
#: Position sets ``filter_covers`` may compute before answering False (see there).
_COVERS_BUDGET = 10_000
#: Stands, in ``filter_covers``, for any level that the general filter does not name.
_OTHER = None


def filter_covers(general: str, specific: str) -> bool:
    """Does filter ``general`` match every topic that filter ``specific`` matches?

    A topic has at least one level. A ``#`` in ``general`` covers any run of
    levels of ``specific`` (wildcards included), a ``+`` one level (a literal
    or ``+``), a literal only itself, and these combine as the sets of topics
    do: ``+/#`` covers ``#/a`` and ``#/+``.

    Exactly: a level of ``specific`` that ``general`` does not name (and each
    ``+``) can only be matched by a wildcard of ``general``, like every other
    such level, so all of them are read as one level ``_OTHER``, and a ``#``
    of ``specific`` as any number of ``_OTHER`` levels (a literal of
    ``general`` in its place would only be easier to match). The function
    runs ``general`` as a set-of-positions automaton over ``specific`` and
    keeps every set the ``#`` runs can lead to; covered means every set
    reached at the end accepts. A pathological pair (it takes a general
    filter like ``#/a/+/+/+/+/+/+``) that would need more than
    ``_COVERS_BUDGET`` steps gets False: never covered by mistake, which is
    the safe answer for both allow lists (refuse) and deny lists (the
    per-delivery ``may_receive`` check still holds the denied topics back).
    """
    g = general.split(SEPARATOR)
    s = specific.split(SEPARATOR)
    if SINGLE_LEVEL not in s and MULTI_LEVEL not in s:
        return filter_matches(g, s)  # one topic
    if MULTI_LEVEL in s and MULTI_LEVEL not in g:
        return False  # topics of any length against topics of one length
    if all(level == MULTI_LEVEL for level in s):
        s = [SINGLE_LEVEL, MULTI_LEVEL]  # '#' alone: one level or more, as topics have
    named = set(g)
    end = len(g)
    sets = {_closure(g, (0,))}
    budget = _COVERS_BUDGET
    for level in s:
        if level == MULTI_LEVEL:
            frontier = sets
            while frontier and budget >= 0:
                budget -= len(frontier)
                frontier = {_step(g, positions, _OTHER) for positions in frontier} - sets
                sets |= frontier
        else:
            budget -= len(sets)
            symbol = level if level in named and level != SINGLE_LEVEL else _OTHER
            sets = {_step(g, positions, symbol) for positions in sets}
        if budget < 0:
            return False
        if frozenset() in sets:
            return False  # some topic of ``specific`` has already left ``general``
    return all(end in positions for positions in sets)


def _closure(g: list, positions) -> frozenset:
    """Positions in ``g`` (levels matched so far), with each ``#`` also matching
    nothing; positions before the last ``#`` reached are dropped, since that
    ``#`` can take over whatever they could still match."""
    result = set()
    top = 0
    for p in positions:
        while p < len(g) and g[p] == MULTI_LEVEL:
            result.add(p)
            top = max(top, p)
            p += 1
        result.add(p)
    return frozenset(p for p in result if p >= top)


def _step(g: list, positions: frozenset, symbol) -> frozenset:
    """The positions after matching one more topic level ``symbol``."""
    following = []
    for p in positions:
        if p < len(g):
            level = g[p]
            if level == MULTI_LEVEL:
                following.append(p)
            elif level == SINGLE_LEVEL or level == symbol:
                following.append(p + 1)
    return _closure(g, following)


def _compile(filters) -> tuple:
    """Filters as split lists of levels, each checked to be a valid filter."""
    return tuple(validate_filter(f).split(SEPARATOR) for f in filters)


def _any_matches(filters: tuple, levels: list) -> bool:
    for pattern in filters:
        if filter_matches(pattern, levels):
            return True
    return False


class Permissions:
    """One user's publish and subscribe permissions (see the module docstring).

    Decisions on publish topics are cached. A Permissions with
    ``allow_responses`` also holds the reply topics its session may answer,
    so each session gets its own copy (``for_session``).
    """

    #: False only for ``UNRESTRICTED``: a protocol may skip every check then.
    restricted = True

    def __init__(
        self,
        publish_allow=None,
        publish_deny=(),
        subscribe_allow=None,
        subscribe_deny=(),
        allow_responses: bool = False,
        max_responses: int = DEFAULT_MAX_RESPONSES,
    ):
        self.publish_allow = None if publish_allow is None else tuple(publish_allow)
        self.publish_deny = tuple(publish_deny)
        self.subscribe_allow = None if subscribe_allow is None else tuple(subscribe_allow)
        self.subscribe_deny = tuple(subscribe_deny)
        self.allow_responses = bool(allow_responses)
        self.max_responses = max_responses
        self._publish_allow = None if publish_allow is None else _compile(self.publish_allow)
        self._publish_deny = _compile(self.publish_deny)
        _compile(self.subscribe_allow or ())  # validated; matched as strings by filter_covers
        self._subscribe_deny = _compile(self.subscribe_deny)
        self._publish_cache: dict = {}
        self._replies = collections.OrderedDict()  # reply topic -> None, oldest first

    def __repr__(self):
        names = ("publish_allow", "publish_deny", "subscribe_allow", "subscribe_deny", "allow_responses")
        return "Permissions(%s)" % ", ".join("%s=%r" % (name, getattr(self, name)) for name in names)

    def for_session(self) -> Permissions:
        """The Permissions one session (connection) uses: ``self`` when it keeps
        no per-session state, else a copy with its own (empty) reply record.
        nats-server, too, records the replies a client may answer per client."""
        if not self.allow_responses:
            return self
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)  # the publish cache stays shared
        copy._replies = collections.OrderedDict()
        return copy

    def may_publish(self, topic: str) -> bool:
        allowed = self._publish_cache.get(topic)
        if allowed is None:
            levels = topic.split(SEPARATOR)
            allowed = (self._publish_allow is None or _any_matches(self._publish_allow, levels)) and not (
                self._publish_deny and _any_matches(self._publish_deny, levels)
            )
            cache = self._publish_cache
            if len(cache) >= _PUBLISH_CACHE_SIZE:
                cache.clear()  # see Router.match: dropping the oldest one by one is O(n) per drop
            cache[topic] = allowed
        if allowed:
            return True
        # nats-server (pubAllowedFullCheck): a publish that the lists refuse
        # may still answer a request this client received, deny list or not.
        if self._replies and topic in self._replies:
            del self._replies[topic]
            return True
        return False

    def note_reply(self, reply_topic: str) -> None:
        """Record that this session was handed a message asking for replies on
        ``reply_topic`` (a no-op without ``allow_responses``)."""
        if not self.allow_responses:
            return
        replies = self._replies
        replies[reply_topic] = None
        replies.move_to_end(reply_topic)  # a newer request: it becomes the youngest
        if len(replies) > self.max_responses:
            replies.popitem(last=False)

    def may_subscribe(self, topic_filter: str) -> bool:
        if self.subscribe_allow is not None:
            if not any(filter_covers(allow, topic_filter) for allow in self.subscribe_allow):
                return False
        return not any(filter_covers(deny, topic_filter) for deny in self.subscribe_deny)

    def may_receive(self, topic: str) -> bool:
        """May a message on ``topic`` be delivered (to a subscription that was allowed)?"""
        if not self._subscribe_deny:
            return True
        return not _any_matches(self._subscribe_deny, topic.split(SEPARATOR))


class _Unrestricted(Permissions):
    """Everything allowed, with no work done."""

    restricted = False

    def __init__(self):
        super().__init__()

    def __repr__(self):
        return "UNRESTRICTED"

    def for_session(self) -> Permissions:
        return self

    def may_publish(self, topic: str) -> bool:
        return True

    def note_reply(self, reply_topic: str) -> None:
        pass

    def may_subscribe(self, topic_filter: str) -> bool:
        return True

    def may_receive(self, topic: str) -> bool:
        return True


#: The permissions of a user without restrictions.
UNRESTRICTED = Permissions.ALL = _Unrestricted()
