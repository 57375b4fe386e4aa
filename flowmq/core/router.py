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

A match result lists the *deliveries*: one
``(consumer, subscriptions, local)`` entry per consumer, with every
subscription of that consumer that matches (MQTT 5 subscription
identifiers, AMQP overlapping bindings: one delivery per consumer per
message), and ``local``, the ones among them that are not no-local (what
the consumer gets of a message it published itself). Subscriptions that
keep MQTT's rule for ``$`` topics (``wildcard_dollar`` False) are left out
of the results of such topics when their filter starts with a wildcard.
All of it is computed once per topic and cached, so publishing costs the
same whether a consumer has one matching subscription or several.

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

from zope.interface import implementer

from flowmq.core.interfaces import ISubscription
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL, InvalidTopic, is_wildcard_filter

DEFAULT_CACHE_SIZE = 4096
DEFAULT_MAX_LEVELS = 128
#: A match result: (deliveries, groups); see Router.lookup.
_NO_MATCH = ((), ())
#: The first character of the topics that MQTT keeps from leading wildcards.
DOLLAR = "$"


def starts_with_wildcard(topic_filter: str) -> bool:
    """Is the first level of the filter '+' or '#' (MQTT-4.7.2's case)?"""
    first = topic_filter.split(SEPARATOR, 1)[0]
    return first == SINGLE_LEVEL or first == MULTI_LEVEL


@implementer(ISubscription)
class Subscription:
    """One consumer's interest in a topic filter, optionally within a queue group.

    ``consumer`` is the delivery target (flowmq.core.interfaces.IDeliveryTarget).
    The options are the protocol's to set (see ISubscription): ``no_local``
    (MQTT 5 No Local), ``wildcard_dollar`` (True by default, as NATS,
    AMQP and the streams match; MQTT subscriptions set False) and
    ``limited`` (NATS UNSUB with a maximum). Protocols
    subclass this to carry their own per-subscription state (a NATS sid, an
    MQTT QoS ...).
    """

    __slots__ = ("consumer", "filter", "group", "no_local", "wildcard_dollar", "limited", "alone")

    def __init__(self, consumer, topic_filter: str, group: str | None = None,
                 no_local: bool = False, wildcard_dollar: bool = True):
        self.consumer = consumer
        self.filter = topic_filter
        self.group = group
        self.no_local = no_local
        self.wildcard_dollar = wildcard_dollar
        self.limited = False
        #: ``(self,)`` while in a queue group: what a pick delivers with, made
        #: once, not per message (set by QueueGroup, which breaks the cycle
        #: when the member leaves, so a subscription is freed at once).
        self.alone = None

    def receives_dollar(self) -> bool:
        """Does this subscription match topics beginning with '$' that its filter matches?"""
        return self.wildcard_dollar or not starts_with_wildcard(self.filter)

    def __repr__(self):
        return "<%s %r group=%r>" % (type(self).__name__, self.filter, self.group)


class QueueGroup:
    """The members of one queue group on one filter; hands out messages round-robin.

    Members are kept in a list (for picking) with each one's index beside it,
    so that adding and removing are O(1) however large the group is.
    ``dollar_guard``: the filter starts with a wildcard, so members that keep
    MQTT's '$' rule must be passed over for '$' topics.
    """

    __slots__ = ("name", "members", "_index", "_next", "dollar_guard")

    def __init__(self, name: str, topic_filter: str = ""):
        self.name = name
        self.members: list = []
        self._index: dict = {}  # member -> its position in ``members``
        self._next = 0
        self.dollar_guard = starts_with_wildcard(topic_filter)

    def __len__(self):
        return len(self.members)

    def __contains__(self, member):
        return member in self._index

    def add(self, member) -> None:
        self._index[member] = len(self.members)
        self.members.append(member)
        member.alone = (member,)

    def remove(self, member) -> None:
        """Remove a member: the last one takes its place."""
        position = self._index.pop(member)
        member.alone = None
        last = self.members.pop()
        if last is not member:
            self.members[position] = last
            self._index[last] = position

    def pick(self, origin=None, topic: str = "", received: str | None = None):
        """The member that gets the next message, or None.

        ``origin`` is the message's publisher, ``topic`` what the message was
        matched on, ``received`` the topic it carries (``topic`` if None: they
        differ where a stream delivers a stored message to a consumer's
        delivery topic). Passed over, so that the message goes to the next
        member: one whose consumer published the message and does not want it
        back (``echo`` False, or a no-local member), one that keeps MQTT's '$'
        rule on a '$' topic, and one whose permissions refuse ``received``
        (nats-server, too, tries the next queue subscriber when the picked
        one's deny list refuses the subject).
        """
        members = self.members
        count = len(members)
        guard = self.dollar_guard and topic[:1] == DOLLAR
        received = topic if received is None else received
        for _ in range(count):
            index = self._next % count
            self._next = index + 1
            member = members[index]
            if _may_take(member, origin, guard, received):
                return member
        return None

    def deal(self, messages, origin=None, topic: str = "") -> dict:
        """A run of messages from ``origin`` with one topic (``topic`` to
        match, the messages' own to receive) dealt out as ``pick`` picks,
        one message at a time: ``{member: the positions of its messages in
        the run, in order}``, empty when no member may take them. Who may
        take them is the same for every message of the run, so it is
        decided once per member; the messages themselves are not looked
        at (a MessageRun need not make them)."""
        members = self.members
        count = len(members)
        guard = self.dollar_guard and topic[:1] == DOLLAR
        received = messages[0].topic
        takes = [_may_take(member, origin, guard, received) for member in members]
        shares: dict = {}
        if not any(takes):
            return shares
        index = self._next
        for position in range(len(messages)):
            index %= count
            while not takes[index]:
                index = (index + 1) % count
            member = members[index]
            index += 1
            share = shares.get(member)
            if share is None:
                shares[member] = [position]
            else:
                share.append(position)
        self._next = index
        return shares


def _may_take(member, origin, guard: bool, received: str) -> bool:
    """May a queue group ``member`` take a message from ``origin`` that
    carries the topic ``received`` (``guard``: a '$' topic matched by a
    wildcard filter)? See QueueGroup.pick."""
    consumer = member.consumer
    if consumer is origin and (member.no_local or not consumer.echo):
        return False
    if guard and not member.wildcard_dollar:
        return False
    permissions = consumer.permissions
    return permissions is None or permissions.may_receive(received)


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
        #: Subscriptions that keep MQTT's ``$`` rule and could match a ``$``
        #: topic they must not get; while there is none, lookup skips the check.
        self._dollar_guarded = 0

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
                group = node.groups[subscription.group] = QueueGroup(subscription.group, subscription.filter)
            group.add(subscription)
        self.count += 1
        if not subscription.receives_dollar():
            self._dollar_guarded += 1
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
        if not subscription.receives_dollar():
            self._dollar_guarded -= 1
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
        deliveries, groups = self.lookup(topic)
        return tuple(s for _consumer, mine, _local in deliveries for s in mine), groups

    def lookup(self, topic: str):
        """The match result of a topic, ``(deliveries, groups)``:
        ``deliveries`` has one ``(consumer, subscriptions, local)`` per consumer
        (see the module docstring), ``groups`` the queue groups to pick a
        member of. Cached."""
        result = self._cache.get(topic)
        if result is not None:
            return result
        subscriptions: dict = {}
        groups: dict = {}
        _collect(self._root, topic.split(SEPARATOR), 0, subscriptions, groups, {})
        if self._dollar_guarded and topic[:1] == DOLLAR:
            subscriptions = [s for s in subscriptions if s.receives_dollar()]
            groups = [g for g in groups if any(m.receives_dollar() for m in g.members)]
        result = (_deliveries(subscriptions), tuple(groups)) if (subscriptions or groups) else _NO_MATCH
        cache = self._cache
        if len(cache) >= self._cache_size:
            # Emptied when full: dropping the oldest entry of a dict one at a
            # time (del d[next(iter(d))]) walks over every slot deleted before
            # it, which made each miss O(cache size) under reply-inbox churn.
            cache.clear()
        cache[topic] = result
        return result

    def has_interest(self, topic: str) -> bool:
        return self.lookup(topic) is not _NO_MATCH

    def _invalidate(self, topic_filter: str) -> None:
        if is_wildcard_filter(topic_filter):
            self._cache.clear()
        else:
            self._cache.pop(topic_filter, None)


def _deliveries(subscriptions) -> tuple:
    """One ``(consumer, subscriptions, local)`` per consumer, in the order of
    each consumer's first subscription."""
    if len(subscriptions) == 1:  # the common case (a reply inbox, one subscriber): no grouping to do
        for subscription in subscriptions:
            mine = (subscription,)
            return ((subscription.consumer, mine, () if subscription.no_local else mine),)
    by_consumer: dict = {}
    for subscription in subscriptions:
        mine = by_consumer.get(subscription.consumer)
        if mine is None:
            by_consumer[subscription.consumer] = [subscription]
        else:
            mine.append(subscription)
    deliveries = []
    for consumer, mine in by_consumer.items():
        mine = tuple(mine)
        local = tuple(s for s in mine if not s.no_local)
        deliveries.append((consumer, mine, mine if len(local) == len(mine) else local))
    return tuple(deliveries)


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
