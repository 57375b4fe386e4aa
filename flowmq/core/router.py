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

Match results are cached per topic in a bounded dict. A subscription change
drops only the cached topics that the changed filter matches (a literal
filter touches one entry), so churn on reply inboxes does not empty the cache.
"""

from __future__ import annotations

from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, is_wildcard_filter

DEFAULT_CACHE_SIZE = 4096
_NO_MATCH = ((), ())


class Subscription:
    """One consumer's interest in a topic filter, optionally within a queue group.

    ``consumer`` is the delivery target: any object with ``deliver(message,
    subscription)`` and an ``echo`` attribute (False means it does not want
    messages that it published itself). Protocols subclass this to carry
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
    """The members of one queue group on one filter; hands out messages round-robin."""

    __slots__ = ("name", "members", "_next")

    def __init__(self, name: str):
        self.name = name
        self.members: list = []
        self._next = 0

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


class _Node:
    __slots__ = ("children", "single", "multi", "subscriptions", "groups")

    def __init__(self):
        self.children: dict = {}
        self.single: _Node | None = None
        self.multi: _Node | None = None
        self.subscriptions: dict = {}  # Subscription -> None, in subscription order
        self.groups: dict = {}  # group name -> QueueGroup

    def is_empty(self) -> bool:
        return not (self.children or self.single or self.multi or self.subscriptions or self.groups)

    def step(self, level: str, create: bool):
        """The child for ``level`` (a literal or a wildcard), created on demand."""
        if level == SINGLE_LEVEL:
            if self.single is None and create:
                self.single = _Node()
            return self.single
        if level == MULTI_LEVEL:
            if self.multi is None and create:
                self.multi = _Node()
            return self.multi
        child = self.children.get(level)
        if child is None and create:
            child = self.children[level] = _Node()
        return child

    def drop(self, level: str):
        if level == SINGLE_LEVEL:
            self.single = None
        elif level == MULTI_LEVEL:
            self.multi = None
        else:
            del self.children[level]


class Router:
    """Topic filter trie with queue groups and a bounded match cache."""

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE):
        self._root = _Node()
        self._cache: dict = {}
        self._cache_size = cache_size
        self.count = 0

    def subscribe(self, subscription: Subscription) -> None:
        """Add a subscription; its filter must be a valid canonical topic filter."""
        node = self._root
        for level in subscription.filter.split(SEPARATOR):
            node = node.step(level, True)
        if subscription.group is None:
            node.subscriptions[subscription] = None
        else:
            group = node.groups.get(subscription.group)
            if group is None:
                group = node.groups[subscription.group] = QueueGroup(subscription.group)
            group.members.append(subscription)
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
            if group is None or subscription not in group.members:
                return False
            group.members.remove(subscription)
            if not group.members:
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
        _collect(self._root, topic.split(SEPARATOR), 0, subscriptions, groups)
        result = (tuple(subscriptions), tuple(groups)) if (subscriptions or groups) else _NO_MATCH
        cache = self._cache
        if len(cache) >= self._cache_size:
            del cache[next(iter(cache))]
        cache[topic] = result
        return result

    def has_interest(self, topic: str) -> bool:
        subscriptions, groups = self.match(topic)
        return bool(subscriptions or groups)

    def _invalidate(self, topic_filter: str) -> None:
        cache = self._cache
        if not cache:
            return
        if not is_wildcard_filter(topic_filter):
            cache.pop(topic_filter, None)
            return
        pattern = topic_filter.split(SEPARATOR)
        stale = [topic for topic in cache if filter_matches(pattern, topic.split(SEPARATOR))]
        for topic in stale:
            del cache[topic]


def _collect(node: _Node, levels: list, index: int, subscriptions: dict, groups: dict) -> None:
    multi = node.multi
    if multi is not None:
        # '#' swallows zero or more levels: try what follows it at every suffix.
        for rest in range(index, len(levels) + 1):
            _collect(multi, levels, rest, subscriptions, groups)
    if index == len(levels):
        if node.subscriptions:
            subscriptions.update(node.subscriptions)
        if node.groups:
            for group in node.groups.values():
                groups[group] = None
        return
    child = node.children.get(levels[index])
    if child is not None:
        _collect(child, levels, index + 1, subscriptions, groups)
    if node.single is not None:
        _collect(node.single, levels, index + 1, subscriptions, groups)


def filter_matches(pattern: list, levels: list) -> bool:
    """Does a filter (split into levels) match a topic (split into levels)?"""
    if not pattern:
        return not levels
    head = pattern[0]
    if head == MULTI_LEVEL:
        rest = pattern[1:]
        return any(filter_matches(rest, levels[i:]) for i in range(len(levels) + 1))
    if not levels:
        return False
    if head == SINGLE_LEVEL or head == levels[0]:
        return filter_matches(pattern[1:], levels[1:])
    return False
