"""The router: which subscriptions does a message on a topic reach?

Subscriptions are kept in a trie over topic levels. Each node has a dict of
literal children and two dedicated slots for the wildcards: ``+`` (exactly one
level) and ``#`` (zero or more levels, allowed at any position so that AMQP's
``a.#.b`` fits as well as MQTT's trailing ``a/#``). NATS's ``a.>`` (one or
more levels) is the filter ``a/+/#``.

A subscription either stands alone (every matching one gets the message) or
belongs to a queue group: a group is keyed by (filter, group name), and each
message that matches the filter goes to exactly one member of the group,
chosen round-robin so that members get an even share.

Match results are cached per topic in a bounded dict. A change to a literal
filter drops the one cached entry it can affect, so churn on reply inboxes
leaves the cache warm; a change to a wildcard filter empties the cache, which
costs O(1) now and one trie walk per topic later, where finding the affected
entries would cost a scan of the whole cache per change.

Every cost is bounded by the input: filters have at most ``max_levels``
levels (so the trie, and the walk's recursion, are that deep at most), and a
walk enters each ``#`` node at each level at most once, so filters with
several ``#`` levels cannot make it exponential.
"""

from __future__ import annotations

from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, InvalidTopic, is_wildcard_filter

DEFAULT_CACHE_SIZE = 4096
DEFAULT_MAX_LEVELS = 128
_NO_MATCH = ((), ())


class Subscription:
    """One consumer's interest in a topic filter, optionally within a queue group.

    ``consumer`` is the delivery target: any object with ``deliver(message,
    subscription)``, an ``echo`` attribute (False means it does not want
    messages that it published itself) and a ``permissions`` attribute (None,
    or the user's flowmq.auth Permissions, which the broker applies). Protocols subclass this to carry
    their own per-subscription state (a NATS sid, an MQTT QoS ...).
    """

    __slots__ = ("consumer", "filter", "group")

    def __init__(self, consumer, topic_filter: str, group: str | None = None):
        self.consumer = consumer
        self.filter = topic_filter
        self.group = group

    def __repr__(self):
        return "<%s %r group=%r>" % (type(self).__name__, self.filter, self.group)


class QueueGroup:
    """The members of one queue group on one filter; hands out messages round-robin.

    Members are kept in a list (for picking) with each one's index beside it,
    so that adding and removing are O(1) however large the group is.
    """

    __slots__ = ("name", "members", "_index", "_next")

    def __init__(self, name: str):
        self.name = name
        self.members: list = []
        self._index: dict = {}  # member -> its position in ``members``
        self._next = 0

    def __len__(self):
        return len(self.members)

    def __contains__(self, member):
        return member in self._index

    def add(self, member) -> None:
        self._index[member] = len(self.members)
        self.members.append(member)

    def remove(self, member) -> None:
        """Remove a member: the last one takes its place."""
        position = self._index.pop(member)
        last = self.members.pop()
        if last is not member:
            self.members[position] = last
            self._index[last] = position

    def pick(self, origin=None):
        """The member that gets the next message, or None.

        A member whose consumer published the message and asked not to get
        its own messages back (``echo`` False) is passed over.
        """
        members = self.members
        count = len(members)
        for _ in range(count):
            index = self._next % count
            self._next = index + 1
            member = members[index]
            consumer = member.consumer
            if consumer is not origin or consumer.echo:
                return member
        return None


class TrieNode:
    """A node of a trie over topic levels: literal children and one slot
    each for ``+`` and ``#``. Subclasses add what a node holds (the router's
    subscriptions, flowmq.core.filtertrie's filter owners)."""

    __slots__ = ("children", "single", "multi")

    def __init__(self):
        self.children: dict = {}
        self.single = None
        self.multi = None

    def step(self, level: str, create: bool):
        """The child for ``level`` (a literal or a wildcard), created on demand."""
        if level == SINGLE_LEVEL:
            if self.single is None and create:
                self.single = type(self)()
            return self.single
        if level == MULTI_LEVEL:
            if self.multi is None and create:
                self.multi = type(self)()
            return self.multi
        child = self.children.get(level)
        if child is None and create:
            child = self.children[level] = type(self)()
        return child

    def drop(self, level: str):
        if level == SINGLE_LEVEL:
            self.single = None
        elif level == MULTI_LEVEL:
            self.multi = None
        else:
            del self.children[level]


class _Node(TrieNode):
    __slots__ = ("subscriptions", "groups")

    def __init__(self):
        TrieNode.__init__(self)
        self.subscriptions: dict = {}  # Subscription -> None, in subscription order
        self.groups: dict = {}  # group name -> QueueGroup

    def is_empty(self) -> bool:
        return not (self.children or self.single or self.multi or self.subscriptions or self.groups)


class Router:
    """Topic filter trie with queue groups and a bounded match cache."""

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE, max_levels: int = DEFAULT_MAX_LEVELS):
        self._root = _Node()
        self._cache: dict = {}
        #: ``cached(topic)``: the cached match result of a topic, or None (the
        #: hot path tries this before calling ``match``).
        self.cached = self._cache.get
        self._cache_size = cache_size
        self.max_levels = max_levels
        self.count = 0

    def subscribe(self, subscription: Subscription) -> None:
        """Add a subscription; its filter must be a valid canonical topic filter.

        Raises InvalidTopic for a filter of more than ``max_levels`` levels.
        """
        levels = subscription.filter.split(SEPARATOR)
        if len(levels) > self.max_levels:
            raise InvalidTopic("filter has %d levels, more than %d" % (len(levels), self.max_levels))
        node = self._root
        for level in levels:
            node = node.step(level, True)
        if subscription.group is None:
            node.subscriptions[subscription] = None
        else:
            group = node.groups.get(subscription.group)
            if group is None:
                group = node.groups[subscription.group] = QueueGroup(subscription.group)
            group.add(subscription)
        self.count += 1
        self._invalidate(subscription.filter)

    def unsubscribe(self, subscription: Subscription) -> bool:
        """Remove a subscription; False if it was not subscribed."""
        path = []
        node = self._root
        for level in subscription.filter.split(SEPARATOR):
            child = node.step(level, False)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if subscription.group is None:
            if subscription not in node.subscriptions:
                return False
            del node.subscriptions[subscription]
        else:
            group = node.groups.get(subscription.group)
            if group is None or subscription not in group:
                return False
            group.remove(subscription)
            if not group:
                del node.groups[subscription.group]
        self.count -= 1
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            parent.drop(level)
            node = parent
        self._invalidate(subscription.filter)
        return True

    def match(self, topic: str):
        """``(subscriptions, groups)`` for a topic: the stand-alone subscriptions
        and the queue groups whose filters match it."""
        result = self._cache.get(topic)
        if result is not None:
            return result
        subscriptions: dict = {}
        groups: dict = {}
        _collect(self._root, topic.split(SEPARATOR), 0, subscriptions, groups, {})
        result = (tuple(subscriptions), tuple(groups)) if (subscriptions or groups) else _NO_MATCH
        cache = self._cache
        if len(cache) >= self._cache_size:
            # Emptied when full: dropping the oldest entry of a dict one at a
            # time (del d[next(iter(d))]) walks over every slot deleted before
            # it, which made each miss O(cache size) under reply-inbox churn.
            cache.clear()
        cache[topic] = result
        return result

    def has_interest(self, topic: str) -> bool:
        subscriptions, groups = self.match(topic)
        return bool(subscriptions or groups)

    def _invalidate(self, topic_filter: str) -> None:
        if is_wildcard_filter(topic_filter):
            self._cache.clear()
        else:
            self._cache.pop(topic_filter, None)


def _collect(node: _Node, levels: list, index: int, subscriptions: dict, groups: dict, seen: dict) -> None:
    multi = node.multi
    if multi is not None and not (multi.children or multi.single or multi.multi):
        # A trailing '#' (MQTT's a/#, NATS's a.>): it matches whatever follows.
        if multi.subscriptions:
            subscriptions.update(multi.subscriptions)
        for group in multi.groups.values():
            groups[group] = None
    elif multi is not None:
        # '#' swallows zero or more levels: try what follows it at every
        # suffix. ``seen`` holds, per '#' node, the first suffix tried from
        # it; all later ones were tried then, so no suffix is tried twice.
        tried_from = seen.get(id(multi), len(levels) + 1)
        if index < tried_from:
            seen[id(multi)] = index
            for rest in range(index, tried_from):
                _collect(multi, levels, rest, subscriptions, groups, seen)
    if index == len(levels):
        if node.subscriptions:
            subscriptions.update(node.subscriptions)
        if node.groups:
            for group in node.groups.values():
                groups[group] = None
        return
    child = node.children.get(levels[index])
    if child is not None:
        _collect(child, levels, index + 1, subscriptions, groups, seen)
    if node.single is not None:
        _collect(node.single, levels, index + 1, subscriptions, groups, seen)


def filter_matches(pattern: list, levels: list) -> bool:
    """Does a filter (split into levels) match a topic (split into levels)?

    Glob matching over levels, with ``#`` as the star: on a mismatch, go back
    to the last ``#`` and let it swallow one more level. O(len(pattern) *
    len(levels)) at worst, without recursion.
    """
    p = t = 0
    star = -1  # position in pattern just after the last '#' seen
    star_t = 0  # topic position that '#' was last tried at
    while t < len(levels):
        if p < len(pattern) and pattern[p] == MULTI_LEVEL:
            star, star_t = p + 1, t
            p += 1
        elif p < len(pattern) and (pattern[p] == SINGLE_LEVEL or pattern[p] == levels[t]):
            p += 1
            t += 1
        elif star >= 0:
            star_t += 1
            p, t = star, star_t
        else:
            return False
    while p < len(pattern) and pattern[p] == MULTI_LEVEL:
        p += 1
    return p == len(pattern)
