"""Unit tests of the topic router (flowmq.core.router).

The router's answers are checked against a naive reference matcher written
here from the documented semantics ('+' is exactly one level, '#' is zero or
more levels at any position), with hypothesis generating filter sets, topics
and subscribe/unsubscribe/match sequences (so the match cache and its
invalidation are exercised). Queue groups, unsubscribe clean-up and the cache
bound are tested directly.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from zope.interface import implementer

from flowmq.core.interfaces import IDeliveryTarget
from flowmq.core.message import Message
from flowmq.core.router import QueueGroup, Router, Subscription, filter_matches
from flowmq.core.topics import InvalidTopic


@implementer(IDeliveryTarget)
class Consumer:
    """Stand-in for a delivery target: only its identity and ``echo`` matter."""

    permissions = None

    def __init__(self, name="consumer", echo=True):
        self.name = name
        self.echo = echo

    def deliver(self, message, subscriptions):  # pragma: no cover - never called here
        raise AssertionError("the router does not deliver")

    def __repr__(self):
        return "<Consumer %s echo=%s>" % (self.name, self.echo)


# --- the naive reference matcher -------------------------------------------------


def naive_regex(topic_filter):
    """A regex over ``topic + '/'`` (every level followed by '/') for a filter.

    A literal level is itself followed by '/', '+' is one level of anything,
    '#' is any number (including zero) of such levels.
    """
    parts = []
    for level in topic_filter.split("/"):
        if level == "+":
            parts.append("[^/]*/")
        elif level == "#":
            parts.append("(?:[^/]*/)*")
        else:
            parts.append(re.escape(level) + "/")
    return re.compile("".join(parts))


def naive_matches(topic_filter, topic):
    return naive_regex(topic_filter).fullmatch(topic + "/") is not None


@pytest.mark.parametrize(
    "topic_filter, topic, expected",
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a", True),
        ("#", "a/b/c", True),
        ("a/#/c", "a/c", True),
        ("a/#/c", "a/b/b/c", True),
        ("a/#/c", "a/b/c/d", False),
        ("#/c", "c", True),
        ("#/c", "a/c/b", False),
        ("+/#", "a", True),
        ("+/+/#", "a", False),
        ("#/#", "a/b", True),
        ("a/+/#", "a", False),
        ("a/+/#", "a/b", True),
    ],
)
def test_naive_matcher_itself(topic_filter, topic, expected):
    assert naive_matches(topic_filter, topic) is expected


# --- strategies ----------------------------------------------------------------

filter_levels = st.sampled_from(["a", "b", "c", "+", "#"])
topic_levels = st.sampled_from(["a", "b", "c"])
filters = st.lists(filter_levels, min_size=1, max_size=4).map("/".join)
topics = st.lists(topic_levels, min_size=1, max_size=4).map("/".join)
group_names = st.one_of(st.none(), st.sampled_from(["g1", "g2"]))

ALL_TOPICS = ["/".join(p) for n in range(1, 5) for p in itertools.product("abc", repeat=n)]


def group_key(group):
    """(filter, name) of a QueueGroup, read from its members."""
    filters_of_members = {member.filter for member in group.members}
    assert len(filters_of_members) == 1, group.members
    return (filters_of_members.pop(), group.name)


def check_match(router, subscriptions, topic):
    """router.match(topic) must equal what the naive matcher selects from ``subscriptions``."""
    matched_subscriptions, matched_groups = router.match(topic)
    assert isinstance(matched_subscriptions, tuple) and isinstance(matched_groups, tuple)
    assert len(set(map(id, matched_subscriptions))) == len(matched_subscriptions), "duplicates"
    assert len(set(map(id, matched_groups))) == len(matched_groups), "duplicate groups"

    expected_alone = {id(s) for s in subscriptions if s.group is None and naive_matches(s.filter, topic)}
    assert {id(s) for s in matched_subscriptions} == expected_alone, topic

    expected_groups = {}
    for s in subscriptions:
        if s.group is not None and naive_matches(s.filter, topic):
            expected_groups.setdefault((s.filter, s.group), set()).add(id(s))
    actual_groups = {}
    for group in matched_groups:
        assert isinstance(group, QueueGroup)
        actual_groups[group_key(group)] = {id(m) for m in group.members}
    assert actual_groups == expected_groups, topic


# --- property tests -------------------------------------------------------------


@pytest.mark.parametrize("cache_size", [4096, 1])
@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(st.tuples(filters, group_names), min_size=1, max_size=12),
    probe=st.lists(topics, min_size=1, max_size=15),
)
def test_match_equals_naive(cache_size, entries, probe):
    router = Router(cache_size=cache_size)
    subscriptions = []
    for index, (topic_filter, group) in enumerate(entries):
        subscription = Subscription(Consumer(str(index)), topic_filter, group)
        router.subscribe(subscription)
        subscriptions.append(subscription)
    assert router.count == len(subscriptions)
    # Twice over, so that the second pass is answered from the cache where it is large.
    for topic in probe + probe:
        check_match(router, subscriptions, topic)


@pytest.mark.parametrize("cache_size", [4096, 1])
@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("sub"), filters, group_names),
            st.tuples(st.just("unsub"), st.integers(min_value=0, max_value=50)),
            st.tuples(st.just("match"), topics),
        ),
        max_size=40,
    ),
    probe=st.lists(topics, min_size=1, max_size=10),
)
def test_random_operation_sequence(cache_size, ops, probe):
    """Interleaved subscribe/unsubscribe/match: after every change, match == naive."""
    router = Router(cache_size=cache_size)
    live = []
    for op in ops:
        if op[0] == "sub":
            subscription = Subscription(Consumer(), op[1], op[2])
            router.subscribe(subscription)
            live.append(subscription)
        elif op[0] == "unsub":
            if live:
                subscription = live.pop(op[1] % len(live))
                assert router.unsubscribe(subscription) is True
                assert router.unsubscribe(subscription) is False
        else:
            check_match(router, live, op[1])
        # Probe topics that are probably cached from before the change.
        for topic in probe:
            check_match(router, live, topic)
    assert router.count == len(live)


class RouterMachine(RuleBasedStateMachine):
    """Stateful model: a list of live subscriptions and the router must agree.

    After every step all topics of length <= 3 are matched (and so cached when
    the cache is large); the next change must invalidate what it affects.
    """

    cache_size = 4096
    PROBE = [t for t in ALL_TOPICS if t.count("/") < 3]

    @initialize()
    def setup(self):
        self.router = Router(cache_size=self.cache_size)
        self.live = []
        self.dead = []

    @rule(topic_filter=filters, group=group_names)
    def subscribe(self, topic_filter, group):
        subscription = Subscription(Consumer(), topic_filter, group)
        self.router.subscribe(subscription)
        self.live.append(subscription)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def unsubscribe(self, data):
        subscription = data.draw(st.sampled_from(self.live))
        self.live.remove(subscription)
        assert self.router.unsubscribe(subscription) is True
        self.dead.append(subscription)

    @precondition(lambda self: self.dead)
    @rule(data=st.data())
    def unsubscribe_again(self, data):
        assert self.router.unsubscribe(data.draw(st.sampled_from(self.dead))) is False

    @rule(topic_filter=filters, group=group_names)
    def unsubscribe_unknown(self, topic_filter, group):
        assert self.router.unsubscribe(Subscription(Consumer(), topic_filter, group)) is False

    @rule(topic=topics)
    def match(self, topic):
        check_match(self.router, self.live, topic)

    @invariant()
    def agrees_with_naive(self):
        if not hasattr(self, "router"):
            return
        assert self.router.count == len(self.live)
        assert len(self.router._cache) <= self.cache_size
        # Whatever is cached from before the last change first, then all short topics.
        for topic in list(self.router._cache) + self.PROBE:
            check_match(self.router, self.live, topic)


class SmallCacheRouterMachine(RouterMachine):
    cache_size = 1


_machine_settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRouterMachine = RouterMachine.TestCase
TestRouterMachine.settings = _machine_settings
TestSmallCacheRouterMachine = SmallCacheRouterMachine.TestCase
TestSmallCacheRouterMachine.settings = _machine_settings


# --- examples -------------------------------------------------------------------


def test_wildcard_examples():
    router = Router()
    subs = {f: Subscription(Consumer(f), f) for f in ["a/b", "a/+", "a/#", "#", "#/b", "a/#/b", "+/+/#"]}
    for s in subs.values():
        router.subscribe(s)

    def matched(topic):
        return {s.filter for s in router.match(topic)[0]}

    assert matched("a") == {"a/#", "#"}
    assert matched("a/b") == {"a/b", "a/+", "a/#", "#", "#/b", "a/#/b", "+/+/#"}
    assert matched("a/c/b") == {"a/#", "#", "#/b", "a/#/b", "+/+/#"}
    assert matched("c") == {"#"}
    assert router.has_interest("x/y/z")
    router.unsubscribe(subs["#"])
    router.unsubscribe(subs["+/+/#"])
    assert not router.has_interest("c")


def test_unsubscribe_unknown_returns_false():
    router = Router()
    known = Subscription(Consumer(), "a/+/c")
    router.subscribe(known)
    assert router.unsubscribe(Subscription(Consumer(), "x/y")) is False  # path absent
    assert router.unsubscribe(Subscription(Consumer(), "a/+")) is False  # inner node, no subs
    assert router.unsubscribe(Subscription(Consumer(), "a/+/c")) is False  # other object
    assert router.unsubscribe(Subscription(known.consumer, "a/+/c", "g")) is False  # no such group
    grouped = Subscription(Consumer(), "a/+/c", "g")
    router.subscribe(grouped)
    assert router.unsubscribe(Subscription(Consumer(), "a/+/c", "g")) is False  # not a member
    assert router.count == 2
    assert router.unsubscribe(known) is True
    assert router.unsubscribe(known) is False
    assert router.unsubscribe(grouped) is True
    assert router.unsubscribe(grouped) is False
    assert router.count == 0


@settings(max_examples=60, deadline=None)
@given(entries=st.lists(st.tuples(filters, group_names), min_size=1, max_size=10), data=st.data())
def test_unsubscribe_everything_cleans_up(entries, data):
    router = Router()
    subscriptions = [Subscription(Consumer(), f, g) for f, g in entries]
    for s in subscriptions:
        router.subscribe(s)
    for topic in ALL_TOPICS[:13]:
        router.match(topic)  # fill the cache
    for s in data.draw(st.permutations(subscriptions)):
        assert router.unsubscribe(s) is True
    assert router.count == 0
    for topic in ALL_TOPICS:
        assert router.match(topic) == ((), ())
    root = router._root
    assert not (root.children or root.single or root.multi or root.subscriptions or root.groups)


# --- queue groups ---------------------------------------------------------------


def test_round_robin_is_fair():
    router = Router()
    members = [Subscription(Consumer("m%d" % i), "orders/+", "workers") for i in range(5)]
    for m in members:
        router.subscribe(m)
    counts = Counter()
    for n in range(1000):
        subscriptions, groups = router.match("orders/%d" % (n % 7))
        assert subscriptions == ()
        assert len(groups) == 1
        counts[groups[0].pick()] += 1
    assert counts == {m: 200 for m in members}


def test_same_group_name_on_different_filters_are_different_groups():
    router = Router()
    a = Subscription(Consumer("a"), "a/+", "g")
    b = Subscription(Consumer("b"), "+/b", "g")
    router.subscribe(a)
    router.subscribe(b)
    _, groups = router.match("a/b")
    assert len(groups) == 2
    assert {tuple(g.members) for g in groups} == {(a,), (b,)}
    assert all(g.name == "g" for g in groups)
    _, groups = router.match("a/c")
    assert [g.members for g in groups] == [[a]]
    # Same name and same filter: one group with both members.
    c = Subscription(Consumer("c"), "a/+", "g")
    router.subscribe(c)
    _, groups = router.match("a/c")
    assert [g.members for g in groups] == [[a, c]]


def test_standalone_and_group_both_reached():
    router = Router()
    alone = Subscription(Consumer("alone"), "sensors/#")
    workers = [Subscription(Consumer("w%d" % i), "sensors/+", "workers") for i in range(3)]
    router.subscribe(alone)
    for w in workers:
        router.subscribe(w)
    picked = []
    for _ in range(6):
        subscriptions, groups = router.match("sensors/t")
        assert subscriptions == (alone,)
        assert len(groups) == 1
        # Exactly one member per message, and a member of the group.
        member = groups[0].pick()
        assert member in workers
        picked.append(member)
    assert picked == workers + workers


def test_pick_skips_origin_without_echo():
    group = QueueGroup("g")
    assert group.pick() is None  # no members at all
    origin = Consumer("origin", echo=False)
    group.members.append(Subscription(origin, "t"))
    assert group.pick(origin) is None  # the only member is the publisher
    assert group.pick() is group.members[0]
    assert group.pick(Consumer("other")) is group.members[0]
    other = Subscription(Consumer("other"), "t")
    group.members.append(other)
    assert [group.pick(origin) for _ in range(4)] == [other] * 4
    # With echo on, the publisher is an ordinary member.
    echoing = Consumer("echoing", echo=True)
    group2 = QueueGroup("g2")
    only = Subscription(echoing, "t")
    group2.members.append(only)
    assert group2.pick(echoing) is only


def test_pick_through_router_skips_origin():
    router = Router()
    origin = Consumer("origin", echo=False)
    mine = Subscription(origin, "x", "g")
    router.subscribe(mine)
    (group,) = router.match("x")[1]
    assert group.pick(origin) is None
    theirs = Subscription(Consumer("b"), "x", "g")
    router.subscribe(theirs)
    (group,) = router.match("x")[1]
    assert {group.pick(origin) for _ in range(5)} == {theirs}


class Refusing:
    """Permissions that refuse every topic."""

    @staticmethod
    def may_receive(topic):
        return False


members_spec = st.lists(st.fixed_dictionaries({
    "origin": st.booleans(), "echo": st.booleans(), "no_local": st.booleans(),
    "wildcard_dollar": st.booleans(), "refused": st.booleans()}), max_size=6)


@settings(max_examples=300, deadline=None)
@given(spec=members_spec, runs=st.lists(st.integers(1, 12), max_size=5), dollar=st.booleans(),
       start=st.integers(0, 20))
def test_deal_gives_each_message_of_a_run_to_the_member_pick_would(spec, runs, dollar, start):
    """``deal`` (a run at once) and ``pick`` (one message at a time) agree,
    member by member, and leave the round-robin at the same place."""
    origin = Consumer("origin", echo=True)
    topic = "$SYS/x" if dollar else "x"
    groups = []
    for _ in range(2):
        group = QueueGroup("g", "#")
        for index, member in enumerate(spec):
            consumer = origin if member["origin"] else Consumer("c%d" % index, echo=member["echo"])
            if member["refused"] and not member["origin"]:
                consumer.permissions = Refusing()
            group.add(Subscription(consumer, "#", "g", no_local=member["no_local"],
                                   wildcard_dollar=member["wildcard_dollar"]))
        group._next = start
        groups.append(group)
    origin.echo = not spec or spec[0]["echo"]
    dealt, picked = groups
    for size in runs:
        messages = [Message(topic, b"%d" % n) for n in range(size)]
        expected: dict = {}
        for position in range(len(messages)):
            member = picked.pick(origin, topic, topic)
            if member is not None:
                expected.setdefault(dealt.members[picked.members.index(member)], []).append(position)
        assert dealt.deal(messages, origin, topic) == expected
        assert dealt._next % max(1, len(spec)) == picked._next % max(1, len(spec))


# --- the cache ------------------------------------------------------------------


def test_cache_is_bounded():
    router = Router(cache_size=8)
    router.subscribe(Subscription(Consumer(), "#"))
    router.subscribe(Subscription(Consumer(), "t/+"))
    for n in range(100):
        subscriptions, _ = router.match("t/%d" % n)
        assert len(subscriptions) == 2
        assert len(router._cache) <= 8
    for n in range(100):
        router.match("nobody/%d" % n)
        assert len(router._cache) <= 8


def test_cache_literal_change_invalidates_only_that_topic():
    router = Router()
    router.subscribe(Subscription(Consumer(), "a/+"))
    router.match("a/b")
    router.match("a/c")
    inbox = Subscription(Consumer(), "a/b")
    router.subscribe(inbox)
    assert "a/c" in router._cache  # untouched by a literal filter
    assert inbox in router.match("a/b")[0]
    router.unsubscribe(inbox)
    assert inbox not in router.match("a/b")[0]


@settings(max_examples=500, deadline=None)
@given(
    topic_filter=st.lists(st.sampled_from(["a", "b", "+", "#"]), min_size=1, max_size=6).map("/".join),
    topic=st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=7).map("/".join),
)
def test_filter_matches_equals_naive(topic_filter, topic):
    assert filter_matches(topic_filter.split("/"), topic.split("/")) == naive_matches(topic_filter, topic)


def test_deep_topics_against_deep_filters():
    """No recursion limit: a 5000-level topic against filters with many '#'."""
    topic = "/".join(["a"] * 5000)
    assert filter_matches(["#"] * 50 + ["a"], topic.split("/"))
    assert not filter_matches(["#", "b", "#"], topic.split("/"))
    router = Router()
    everything = Subscription(Consumer(), "#")
    router.subscribe(everything)
    router.subscribe(Subscription(Consumer(), "/".join(["#", "a"] * 20)))
    assert everything in router.match(topic)[0]
    assert len(router.match(topic)[0]) == 2


def test_filters_deeper_than_the_limit_are_refused():
    router = Router(max_levels=4)
    router.subscribe(Subscription(Consumer(), "a/b/c/d"))
    with pytest.raises(InvalidTopic):
        router.subscribe(Subscription(Consumer(), "a/b/c/d/e"))
    assert router.count == 1


def test_group_members_removed_in_any_order():
    router = Router()
    members = [Subscription(Consumer(), "jobs", "workers") for _ in range(1000)]
    for member in members:
        router.subscribe(member)
    kept = set(members[::7])
    for member in members[::-1]:
        if member not in kept:
            assert router.unsubscribe(member)
    (group,) = router.match("jobs")[1]
    picked = Counter(group.pick() for _ in range(len(kept) * 3))
    assert set(picked) == kept
    assert set(picked.values()) == {3}
