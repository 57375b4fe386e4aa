"""The subject-overlap checks of JetStream and the filter trie behind them.

- ``flowmq.core.filtertrie`` against a reference: the textbook pairwise
  dynamic programme over two filters' levels, written here from the
  documented semantics ('+' one level, '#' zero or more, anywhere), with
  hypothesis generating filters and filter sets.
- Its cost, counted in the walk's own steps (a budget it raises past, so the
  count is exact and deterministic): 1,000 filters of 128 levels, literal
  and in adversarial wildcard mixes, take a number of steps linear in their
  levels; filters that make the problem genuinely quadratic hit the budget
  instead of running on.
- Through the wire (nats-py): overlapping streams, stream subjects and
  consumer filters are refused with nats-server's codes, and 1,000-subject
  requests of 128 levels are answered. The broker side of such a request is
  counted with ``sys.setprofile`` in the reactor thread (every Python and
  builtin call): it must stay within a budget linear in the request's levels
  (the pairwise check took 48 s for these requests).
"""

from __future__ import annotations

import functools
import json
import sys

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run
from flowmq.core.filtertrie import FilterTrie, OverlapTooComplex, distinct_owners, overlapping

LEVELS = 128
COUNT = 1000
#: The broker's calls for one such request, per level of its subjects: about
#: 25 (JSON, subject conversions, the tries, the router); the pairwise check
#: made over 250 for the overlap check alone.
CALLS_PER_LEVEL = 100


# -- the reference ------------------------------------------------------------------


def reference_overlap(a: str, b: str) -> bool:
    """Is there a topic both filters match? Pairwise over the levels."""
    left, right = a.split("/"), b.split("/")

    @functools.lru_cache(maxsize=None)
    def meet(i, j):
        if i == len(left) and j == len(right):
            return True
        if i < len(left) and left[i] == "#":
            return meet(i + 1, j) or (j < len(right) and meet(i, j + 1))
        if j < len(right) and right[j] == "#":
            return meet(i, j + 1) or (i < len(left) and meet(i + 1, j))
        if i == len(left) or j == len(right):
            return False
        return (left[i] in ("+", right[j]) or right[j] == "+") and meet(i + 1, j + 1)

    return meet(0, 0)


filters = st.lists(st.sampled_from(["a", "b", "c", "+", "#"]), min_size=1, max_size=6).map("/".join)


@given(filters, filters)
@settings(max_examples=600, deadline=None)
def test_two_filters_overlap_as_the_reference_says(a, b):
    found = any(overlapping(FilterTrie([(a, "a")]), FilterTrie([(b, "b")])))
    assert found == reference_overlap(a, b)


@given(st.lists(filters, min_size=1, max_size=8), st.lists(filters, min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_the_walk_finds_every_overlapping_pair_of_two_sets(left, right):
    mine, theirs = FilterTrie((f, f) for f in left), FilterTrie((f, f) for f in right)
    found = {(p, q) for ours, others in overlapping(mine, theirs) for p in ours for q in others}
    assert found == {(p, q) for p in left for q in right if reference_overlap(p, q)}


@given(st.lists(filters, min_size=1, max_size=8, unique=True), st.data())
@settings(max_examples=200, deadline=None)
def test_removing_filters_leaves_the_others(kept, data):
    gone = data.draw(st.lists(filters, max_size=4, unique=True))
    trie = FilterTrie((f, "kept") for f in kept)
    for f in gone:
        trie.add(f, "gone")
    for f in gone:
        assert trie.remove(f, "gone")
    assert not trie.remove(kept[0], "gone")
    probe = FilterTrie((("#", "probe"),))
    assert {p for _ours, others in overlapping(probe, trie) for p in others} == {"kept"}
    assert trie.levels == sum(len(f.split("/")) for f in kept)


def test_distinct_owners():
    assert distinct_owners({"s": None}, {"s": None}) is None
    assert distinct_owners({"s": None}, {"s": None, "t": None}) == ("s", "t")
    assert distinct_owners({"s": None, "t": None}, {"s": None}) == ("t", "s")


# -- the cost ----------------------------------------------------------------------


def deep(prefix, index, pattern, last):
    """A 128-level filter: ``prefix``, levels where ``pattern(index, level)``
    says '+' or 'a', and ``last``."""
    middle = ["+" if pattern(index, level) else "a" for level in range(LEVELS - 1 - len(last.split("/")))]
    return "/".join([prefix] + middle + [last])


def any_overlap(left, right, steps):
    """Do two filters of these lists (one list: of that list) overlap? The
    walk of their tries may take ``steps`` steps (OverlapTooComplex past them)."""
    mine = FilterTrie((f, ("L", i)) for i, f in enumerate(left))
    theirs = mine if right is None else FilterTrie((f, ("R", i)) for i, f in enumerate(right))
    return any(distinct_owners(ours, others) for ours, others in overlapping(mine, theirs, steps))


def every_third(index, level):
    return (index + level) % 3 == 0


def one_in_three(index, level):
    return (index + level) % 3 == 1


def literal(index, level):
    return False


def wild(index, level):
    return True


@pytest.mark.parametrize("left, right, per_level", [
    # One stream's subjects, checked against each other.
    ([deep("k%d" % i, i, literal, "z") for i in range(COUNT)], None, 4),
    ([deep("deep", i, literal, "k%d" % i) for i in range(COUNT)], None, 4),
    ([deep("deep", i, wild, "k%d" % i) for i in range(COUNT)], None, 4),
    ([deep("deep", i, every_third, "k%d" % i) for i in range(COUNT)], None, 4),
    ([deep("deep", i, every_third, "k%d/+/#" % i) for i in range(COUNT)], None, 4),
    # A new stream's against another stream's.
    ([deep("deep", i, wild, "k%d" % i) for i in range(COUNT)],
     [deep("d%d" % i, i, literal, "m") for i in range(COUNT)], 4),
    ([deep("deep", i, every_third, "k%d/b/c" % i) for i in range(COUNT)],
     [deep("deep", i, one_in_three, "m%d/+/#" % i) for i in range(COUNT)], 4),
    (["+/" * (LEVELS - 1) + "k%d" % i for i in range(COUNT)],
     ["k%d/" % i + "a/" * (LEVELS - 2) + "m/+/#" for i in range(COUNT)], 4),
])
def test_a_thousand_deep_filters_take_steps_linear_in_their_levels(left, right, per_level):
    levels = sum(len(f.split("/")) for f in left + (right or []))
    assert not any_overlap(left, right, per_level * levels)


def test_one_overlap_among_a_thousand_deep_filters_is_found_soon():
    mine = FilterTrie((deep("deep", i, every_third, "k%d" % i), i) for i in range(COUNT))
    theirs = FilterTrie([(deep("deep", 5, literal, "k5"), "other")]
                        + [(deep("d%d" % i, i, literal, "m"), "other") for i in range(COUNT)])
    found = next(pair for pair in overlapping(mine, theirs, 4 * mine.levels) if distinct_owners(*pair))
    assert found == ({5: None}, {"other": None})


def test_a_truly_quadratic_mix_is_cut_at_the_budget():
    """Wildcards on both sides at different levels, no overlap anywhere: every
    pair of filters must be looked at (the orthogonal-vectors problem), so
    the walk raises at its budget instead of taking N x N steps."""
    n = 300
    mine = FilterTrie(("+/x%d/z" % i, i) for i in range(n))
    theirs = FilterTrie(("y%d/+/w" % i, -i - 1) for i in range(n))
    with pytest.raises(OverlapTooComplex):
        for _pair in overlapping(mine, theirs, 20 * (mine.levels + theirs.levels)):
            raise AssertionError("these filters do not overlap")
    assert not any(overlapping(mine, theirs, 10 * n * n))  # given the steps, it is right


# -- through the wire ---------------------------------------------------------------------


def subjects(first, pattern, last, count=COUNT):
    """``count`` NATS subjects of 128 levels (see ``deep``; ``first`` and
    ``last`` are formatted with the index; a final '>' is two levels, '+' and
    '#', in the broker's router)."""
    middle = LEVELS - 1 - len(last.split(".")) - last.endswith(">")
    return [".".join([first.format(i)] + ["*" if pattern(i, level) else "a" for level in range(middle)]
                     + [last.format(i)])
            for i in range(count)]


class CallCounter:
    """A profile function for the reactor thread: counts every call (Python
    and builtin) and raises past ``budget``, which ends the request that
    overspends (CPython then turns profiling off)."""

    def __init__(self, budget):
        self.budget = budget
        self.calls = 0

    def __call__(self, frame, event, arg):
        if event == "call" or event == "c_call":
            self.calls += 1
            if self.calls > self.budget:
                raise RuntimeError("more than %d calls" % self.budget)


async def counted_request(broker, nc, subject, body):
    """One API request's answer; the reactor thread may make CALLS_PER_LEVEL
    calls per level of the subjects in it meanwhile (the request fails past
    them)."""
    levels = sum(len(s.split(".")) for key in ("subjects", "filter_subjects")
                 for s in (body.get(key) or body.get("config", {}).get(key) or ()))
    broker.call(sys.setprofile, CallCounter(CALLS_PER_LEVEL * levels))
    try:
        return json.loads((await nc.request(subject, json.dumps(body).encode(), timeout=60)).data)
    finally:
        broker.call(sys.setprofile, None)


def test_thousand_subject_streams_of_128_levels_are_checked_in_linear_time(broker):
    first = subjects("deep", every_third, "k{}")
    second = subjects("deep", one_in_three, "m{}")
    third = subjects("t{}", wild, ">")
    clash = subjects("deep", one_in_three, "q{}")
    clash[700] = subjects("deep", literal, "k{}", 6)[5]  # matches the 5th of ``first``

    async def main():
        nc = await nats.connect(broker.url)
        answers = {}
        for name, subject_list in (("FIRST", first), ("SECOND", second), ("THIRD", third)):
            answers[name] = await counted_request(broker, nc, "$JS.API.STREAM.CREATE." + name,
                                                  {"name": name, "subjects": subject_list, "storage": "memory"})
        # Updating a stream with its own subjects (and one more) is no overlap.
        answers["update"] = await counted_request(broker, nc, "$JS.API.STREAM.UPDATE.FIRST", {
            "name": "FIRST", "subjects": first[1:] + ["first.extra"], "storage": "memory"})
        answers["clash"] = json.loads((await nc.request("$JS.API.STREAM.CREATE.CLASH", json.dumps(
            {"name": "CLASH", "subjects": clash, "storage": "memory"}).encode(), timeout=60)).data)
        answers["names"] = json.loads((await nc.request("$JS.API.STREAM.NAMES", json.dumps(
            {"subject": clash[700]}).encode(), timeout=60)).data)
        await nc.close()
        return answers

    answers = run(main(), timeout=120)
    for name in ("FIRST", "SECOND", "THIRD", "update"):
        document = answers[name]
        assert "error" not in document, document
        assert len(document["config"]["subjects"]) >= COUNT
    assert answers["clash"]["error"]["err_code"] == 10065
    assert answers["clash"]["error"]["description"] == "subjects overlap with an existing stream"
    assert answers["names"]["streams"] == ["FIRST"]


def test_overlapping_subjects_within_a_stream_are_refused(broker):
    async def main():
        nc = await nats.connect(broker.url)
        answers = []
        for subject_list in (["d.*.c", "d.b.>"], ["e.b", "e.b"], ["f.*", "f.+"],
                             subjects("deep", every_third, "k{}", COUNT - 1) + ["deep.>"]):
            reply = await nc.request("$JS.API.STREAM.CREATE.S", json.dumps(
                {"name": "S", "subjects": subject_list}).encode(), timeout=60)
            answers.append(json.loads(reply.data)["error"])
        await nc.close()
        return answers

    d, e, f, deep_error = run(main(), timeout=120)
    # nats-server 2.10's answers, word for word.
    assert d == {"code": 500, "err_code": 10052, "description": 'subject "d.*.c" overlaps with "d.b.>"'}
    assert e == {"code": 500, "err_code": 10052, "description": 'subject "e.b" overlaps with "e.b"'}
    assert f["err_code"] == 10052  # FlowMQ's '+' token is the '*' wildcard
    assert deep_error["err_code"] == 10052 and '"deep.>"' in deep_error["description"]


def test_streams_overlapping_another_are_refused(broker):
    async def main():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="F", subjects=["b.*.c"])
        refused = []
        for name, subject_list in (("G", ["b.x.>"]), ("G2", ["zz", "b.*.*"]), ("G3", [">"])):
            with pytest.raises(nats.js.errors.BadRequestError) as caught:
                await js.add_stream(name=name, subjects=subject_list, no_ack=True)
            refused.append(caught.value.err_code)
        await js.add_stream(name="H", subjects=["b.x.d", "b.*.c.>"])  # no topic matches both
        await js.add_stream(name="I", subjects=["other"])
        with pytest.raises(nats.js.errors.BadRequestError) as updated:
            await js.update_stream(name="I", subjects=["other", "b.y.c"])
        await js.delete_stream("F")
        await js.add_stream(name="F2", subjects=["b.*.c"])  # F's subjects are free again
        await nc.close()
        return refused, updated.value.err_code

    refused, updated = run(main())
    assert refused == [10065, 10065, 10065]
    assert updated == 10065


def test_consumer_filter_subjects_are_checked_in_linear_time(broker):
    stream_subjects = subjects("deep", every_third, "k{}")
    filter_subjects = subjects("deep", literal, "k{}")  # one of the stream's subjects each

    async def main():
        nc = await nats.connect(broker.url)
        await nc.request("$JS.API.STREAM.CREATE.DEEP", json.dumps(
            {"name": "DEEP", "subjects": stream_subjects, "storage": "memory"}).encode(), timeout=60)
        created = await counted_request(broker, nc, "$JS.API.CONSUMER.CREATE.DEEP.C", {
            "stream_name": "DEEP", "config": {"name": "C", "filter_subjects": filter_subjects}})
        answers = []
        for filters in (filter_subjects[:10] + [stream_subjects[3]],  # the 4th one twice, in two spellings
                        ["deep.>", filter_subjects[0]],
                        filter_subjects[:10] + ["elsewhere.>"]):
            reply = await nc.request("$JS.API.CONSUMER.CREATE.DEEP.D", json.dumps(
                {"stream_name": "DEEP", "config": {"name": "D", "filter_subjects": filters}}).encode(), timeout=60)
            answers.append(json.loads(reply.data)["error"]["err_code"])
        await nc.close()
        return created, answers

    created, answers = run(main(), timeout=120)
    assert "error" not in created, created
    assert len(created["config"]["filter_subjects"]) == COUNT
    assert answers == [10138, 10138, 10093]


def test_consumer_filters_are_refused_only_when_one_takes_in_another(broker):
    """nats-server 2.15 (checked against it): filters that merely overlap
    (`a.*.c` and `a.b.>` share `a.b.c`) are a valid consumer; a filter that
    takes in another, or one given twice, gets 10138."""
    async def main():
        nc = await nats.connect(broker.url)
        await nc.request("$JS.API.STREAM.CREATE.S", json.dumps({"name": "S", "subjects": ["a.>"]}).encode())
        answers = []
        for i, filters in enumerate((["a.*.c", "a.b.>"], ["a.>", "a.b"], ["a.b", "a.b"],
                                     ["a.b.c", "a.*.c"], ["a.*", "a.*"], ["a.*.c", "a.b.*"])):
            reply = await nc.request("$JS.API.CONSUMER.CREATE.S.C%d" % i, json.dumps(
                {"stream_name": "S", "config": {"name": "C%d" % i, "filter_subjects": filters}}).encode())
            answers.append(json.loads(reply.data).get("error", {}).get("err_code"))
        await nc.close()
        return answers

    assert run(main()) == [None, 10138, 10138, 10138, 10138, None]


def test_work_queue_consumers_must_not_overlap(broker):
    """nats-server's partitionUnique: on create and on update."""
    async def main():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="WQ", subjects=["jobs.>"], retention="workqueue")

        async def consumer(name, filters):
            reply = await nc.request("$JS.API.CONSUMER.CREATE.WQ." + name, json.dumps({"stream_name": "WQ", "config": {
                "name": name, "ack_policy": "explicit", "filter_subjects": filters}}).encode())
            document = json.loads(reply.data)
            return document["error"]["err_code"] if "error" in document else "ok"

        return [await consumer("A", ["jobs.*.c"]), await consumer("B", ["jobs.b.>"]),
                await consumer("B", ["jobs.b.d"]), await consumer("C", []),
                await consumer("B", ["jobs.b.d", "jobs.x.c"]), await consumer("B", ["jobs.b.d", "jobs.x.e"])]

    assert run(main()) == ["ok", 10100, "ok", 10099, 10100, "ok"]
