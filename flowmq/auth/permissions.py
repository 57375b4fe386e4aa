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

from flowmq.core.covers import filter_covers
from flowmq.core.router import filter_matches
from flowmq.core.topics import SEPARATOR, validate_filter

#: How many reply topics an ``allow_responses`` session remembers at most.
DEFAULT_MAX_RESPONSES = 1_000
#: Publish decisions remembered per Permissions (nats-server keeps a
#: per-client publish permission cache of 128 entries).
_PUBLISH_CACHE_SIZE = 256
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
