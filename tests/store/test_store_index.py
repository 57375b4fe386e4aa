"""The store's indexes (index.py): out-of-order removals, many filters over
one log, compared with a plain model; and counts that show the costs stay
flat (entries built once, removals cut out in batches)."""

from __future__ import annotations

from array import array

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from flowmq.core.router import filter_matches
from flowmq.core.store import MemoryStore, index
from flowmq.core.store.index import SeqIndex

TOPICS = st.sampled_from(["a/%d" % n for n in range(12)] + ["b/1", "b/2/c", "c"])
FILTERS = ["a/+", "+/1", "#", "b/#", "a/3", "+", "+/+/c", "a/#", "c/#", "x/+"]


class IndexMatchesModel(RuleBasedStateMachine):
    """A SeqIndex against a sorted list, with cuts made small enough to happen."""

    @initialize()
    def start(self):
        self.index, self.model, self.next = SeqIndex(), [], 1

    @rule(count=st.integers(1, 20))
    def append(self, count):
        for _ in range(count):
            self.index.seqs.append(self.next)
            self.model.append(self.next)
            self.next += 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove(self, data):
        seq = data.draw(st.sampled_from(self.model))
        self.index.remove(seq)
        self.model.remove(seq)

    @precondition(lambda self: self.model)
    @rule()
    def remove_first(self):
        self.index.remove(self.model.pop(0))

    @rule(data=st.data())
    def queries(self, data):
        start = data.draw(st.integers(0, self.next + 1))
        later = [seq for seq in self.model if seq >= start]
        assert self.index.next_seq(start) == (later[0] if later else None)
        assert self.index.count_from(start) == len(later)

    @invariant()
    def same(self):
        assert len(self.index) == len(self.model)
        assert list(self.index.newest_first()) == self.model[::-1]
        if self.model:
            assert self.index.first() == self.model[0]

    @invariant()
    def live_last(self):  # live() cuts: checked last, so the other checks also see uncut states
        assert list(self.index.live()) == self.model


class StoreMatchesModel(RuleBasedStateMachine):
    """A MemoryStore under appends, out-of-order deletes and purges against a
    dict of live messages, queried with more filters than it may keep views
    for (so both answers, views and merges over topics, are compared)."""

    @initialize()
    def start(self):
        self.store, self.live = MemoryStore(), {}

    @rule(topic=TOPICS, count=st.integers(1, 6))
    def append(self, topic, count):
        for _ in range(count):
            seq, _ts = self.store.append(topic, None, b"")
            self.live[seq] = topic

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete(self, data):
        seq = data.draw(st.sampled_from(sorted(self.live)))
        assert self.store.delete(seq)
        del self.live[seq]

    @rule(topic_filter=st.sampled_from(FILTERS + [None]), keep=st.none() | st.integers(0, 3))
    def purge(self, topic_filter, keep):
        matching = sorted(seq for seq, topic in self.live.items() if _matches(topic_filter, topic))
        gone = matching[: max(0, len(matching) - (keep or 0))]
        assert self.store.purge(topic_filter, keep=keep) == len(gone)
        for seq in gone:
            del self.live[seq]

    @rule(data=st.data())
    def queries(self, data):
        last = self.store.state().last_seq
        for topic_filter in FILTERS:
            start = data.draw(st.integers(0, last + 1))
            matching = sorted(seq for seq, topic in self.live.items() if _matches(topic_filter, topic) and seq >= start)
            found = self.store.next_message(start, topic_filter)
            assert (found.seq if found else None) == (matching[0] if matching else None), topic_filter
            assert self.store.count_pending(start, topic_filter) == len(matching), topic_filter
            newest = max((seq for seq, topic in self.live.items() if _matches(topic_filter, topic)), default=None)
            found = self.store.last_message(topic_filter)
            assert (found.seq if found else None) == newest, topic_filter

    @invariant()
    def topics(self):
        for topic_filter in ("a/+", "b/#"):
            expected = {}
            for topic in self.live.values():
                if _matches(topic_filter, topic):
                    expected[topic] = expected.get(topic, 0) + 1
            assert self.store.topics(topic_filter) == expected


def _matches(topic_filter, topic):
    return topic_filter is None or filter_matches(topic_filter.split("/"), topic.split("/"))


_SETTINGS = settings(max_examples=80, stateful_step_count=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def test_seq_index_matches_a_sorted_list(monkeypatch):
    monkeypatch.setattr(index, "CUT_MIN", 4)
    case = IndexMatchesModel.TestCase
    case.settings = _SETTINGS
    case().runTest()


def test_store_with_many_filters_and_out_of_order_deletes_matches_a_model(monkeypatch):
    monkeypatch.setattr(index, "CUT_MIN", 4)
    monkeypatch.setattr(index, "MERGE_TOPICS", 2)
    monkeypatch.setattr(index, "MAX_VIEWS", 2)  # the other filters are answered from their topics
    case = StoreMatchesModel.TestCase
    case.settings = _SETTINGS
    case().runTest()


def test_a_thousand_filters_are_each_found_once_not_rebuilt(monkeypatch):
    """Before: 64 views, least recently used first, so the 65th filter in a
    round robin evicted one and every lookup rebuilt a view by a scan."""
    store = MemoryStore()
    for n in range(1000):
        store.append("session/%d/in" % n, None, b"x")
    builds = []
    real = index.FilterTable._build
    monkeypatch.setattr(index.FilterTable, "_build", lambda table, f: builds.append(f) or real(table, f))
    for _round in range(3):
        for n in range(1000):
            assert store.count_pending(1, "session/%d/#" % n) == 1
            assert store.next_message(1, "session/%d/+" % n).seq == n + 1
    assert len(builds) == 2000  # each filter once, however many rounds


def test_out_of_order_removals_are_cut_out_in_batches(monkeypatch):
    """Before: every removal from the middle shifted the array's tail (O(n));
    now they wait aside and are cut out together: count the cuts."""
    cuts = []
    real = SeqIndex._cut
    monkeypatch.setattr(SeqIndex, "_cut", lambda self: cuts.append(len(self.gone)) or real(self))
    seqs = SeqIndex(array("Q", range(1, 100001)))
    for seq in range(100000, 1, -2):  # every other one, newest first: none at the head
        seqs.remove(seq)
    assert len(seqs) == 50000 and seqs.count_from(1) == 50000 and seqs.next_seq(2) == 3
    assert len(cuts) <= 50000 // index.CUT_MIN and all(count >= index.CUT_MIN for count in cuts)


def test_a_new_topic_is_checked_against_the_filters_it_may_match_only(monkeypatch):
    """A thousand per-session filters: a new topic costs a few filter checks, not a thousand."""
    store = MemoryStore()
    for n in range(1000):
        store.append("session/%d/in" % n, None, b"x")
        store.count_pending(1, "session/%d/#" % n)
    store.count_pending(1, "+/7/in")
    checks = []
    real = index.filter_matches
    monkeypatch.setattr(index, "filter_matches", lambda pattern, levels: checks.append(pattern) or real(pattern, levels))
    store.append("session/7/out", None, b"y")
    assert sorted("/".join(p) for p in checks) == ["+/7/in", "session/7/#"]
    assert store.count_pending(1, "session/7/#") == 2 and store.count_pending(1, "+/7/in") == 1
