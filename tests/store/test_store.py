"""One behaviour suite for both message stores (MemoryStore and FileStore).

Every test gets ``make`` (a factory taking Limits) for each store kind; the
FileStore ones use tiny segments so that the multi-segment paths run too,
and ``reopen`` (FileStore: close and open again; MemoryStore: the same
store) so that each behaviour is also checked after a restart.
"""

from __future__ import annotations

import time

import pytest

from flowmq.core.store import index
from flowmq.core.store import (
    MAX_BYTES,
    MAX_MSG_SIZE,
    MAX_MSGS,
    MAX_MSGS_PER_SUBJECT,
    FileStore,
    LimitExceeded,
    Limits,
    MemoryStore,
    StoredMessage,
)


class Harness:
    def __init__(self, kind, tmp_path):
        self.kind = kind
        self.directory = str(tmp_path / "stream")
        self.store = None

    def make(self, limits=None, **kwargs):
        if self.kind == "memory":
            self.store = MemoryStore(limits or Limits(**kwargs))
        else:
            self.store = FileStore(self.directory, limits or Limits(**kwargs), name="test", segment_bytes=400)
        return self.store

    def reopen(self):
        if self.kind == "file":
            limits = self.store.limits
            self.store.close()
            self.store = FileStore(self.directory, limits, name="test", segment_bytes=400)
        return self.store


@pytest.fixture(params=["memory", "file"])
def harness(request, tmp_path):
    h = Harness(request.param, tmp_path)
    yield h
    if h.kind == "file" and h.store is not None:
        h.store.close()


def fill(store, topics, count=None, start_ts=1000):
    """Append one message per topic in ``topics``; timestamps 1000, 1001, ..."""
    out = []
    for i, topic in enumerate(topics[:count] if count else topics):
        out.append(store.append(topic, None, b"m%d" % i, timestamp=start_ts + i)[0])
    return out


def seqs_of(store, topic_filter=None):
    result, seq = [], 1
    while True:
        message = store.next_message(seq, topic_filter)
        if message is None:
            return result
        result.append(message.seq)
        seq = message.seq + 1


# -- appending and reading -----------------------------------------------------


def test_append_get_and_size(harness):
    store = harness.make()
    assert store.append("a/b", None, b"hello", timestamp=5) == (1, 5)
    headers = (("X", "1"), ("Y", "two"), ("X", "3"))
    assert store.append("a/c", list(map(list, headers)), b"", timestamp=6) == (2, 6)
    seq, stamp = store.append("\u00e9t\u00e9/\U0001f600", (), b"\x00\xff")
    assert seq == 3 and stamp > 1_600_000_000 * 10**9
    for s in (store, harness.reopen()):
        first = s.get(1)
        assert (first.seq, first.topic, first.headers, first.payload, first.timestamp) == (1, "a/b", None, b"hello", 5)
        assert first.size == len("a/b") + 5 + 16
        second = s.get(2)
        assert second.headers == headers
        # each pair: u16 + u32 lengths, then name and value
        assert second.size == len("a/c") + sum(6 + len(n) + len(v) for n, v in headers) + 16
        third = s.get(3)
        assert third.topic == "\u00e9t\u00e9/\U0001f600" and third.headers is None and third.payload == b"\x00\xff"
        assert third.size == len("\u00e9t\u00e9/\U0001f600".encode()) + 2 + 16
        assert s.get(0) is None and s.get(4) is None
        assert s.state().bytes == first.size + second.size + third.size


def test_payload_types_are_stored_as_bytes(harness):
    store = harness.make()
    store.append("t", None, bytearray(b"ab"), timestamp=1)
    store.append("t", None, memoryview(b"cd"), timestamp=2)
    assert [store.get(s).payload for s in (1, 2)] == [b"ab", b"cd"]
    assert type(store.get(1).payload) is bytes


def test_next_message_with_filters(harness):
    store = harness.make()
    topics = ["a/b/c", "a/x/c", "a/b", "z/b/c", "a/b/c/d", "a/b/c"]
    fill(store, topics)
    for s in (store, harness.reopen()):
        assert seqs_of(s) == [1, 2, 3, 4, 5, 6]
        assert seqs_of(s, "a/b/c") == [1, 6]
        assert seqs_of(s, "a/+/c") == [1, 2, 6]
        assert seqs_of(s, "+/b/c") == [1, 4, 6]
        assert seqs_of(s, "a/#") == [1, 2, 3, 5, 6]
        assert seqs_of(s, "a/#/c") == [1, 2, 6]  # '#' in the middle, zero or more levels
        assert seqs_of(s, "#/d") == [5]
        assert seqs_of(s, "#") == [1, 2, 3, 4, 5, 6]
        assert seqs_of(s, "nothing") == [] and seqs_of(s, "q/+") == []
        assert s.next_message(2, "a/b/c").seq == 6
        assert s.next_message(7) is None and s.next_message(0).seq == 1


def test_next_message_wildcard_matching_many_topics(harness):
    store = harness.make()
    topics = ["k/%d" % i for i in range(100)] + ["other"] + ["k/%d" % i for i in range(100)]
    fill(store, topics)
    store.delete(150)
    expected = [i + 1 for i, t in enumerate(topics) if t.startswith("k/") and i + 1 != 150]
    assert seqs_of(store, "k/+") == expected
    assert seqs_of(store, "#/other") == [101]
    assert store.count_pending(120, "k/+") == len([s for s in expected if s >= 120])
    assert store.last_message("k/+").seq == 201


def test_next_message_wildcard_with_very_many_topics(harness):
    store = harness.make()
    for i in range(1100):
        store.append("u/%d/x" % i if i % 10 else "u/%d/y" % i, None, b"", timestamp=i)
    assert seqs_of(store, "u/+/y") == list(range(1, 1101, 10))
    store.append("u/new/y", None, b"", timestamp=2000)  # a new topic: the list is stale
    assert store.next_message(1092, "u/+/y").seq == 1101
    assert store.count_pending(1000, "u/+/y") == 11
    assert store.topics("u/+/y")["u/new/y"] == 1


def test_wildcard_views_follow_appends_removals_and_eviction(harness, monkeypatch):
    monkeypatch.setattr(index, "MAX_FILTERS", 2)
    monkeypatch.setattr(index, "MERGE_TOPICS", 1)  # two topics make a view
    store = harness.make()
    fill(store, ["a/1", "b/1", "a/2"])
    assert store.count_pending(1, "a/+") == 2
    assert store.count_pending(1, "+/1") == 2
    store.append("a/3", None, b"", timestamp=5)  # a new topic joins the views it matches
    store.append("b/1", None, b"", timestamp=6)
    assert store.count_pending(1, "a/+") == 3 and store.count_pending(1, "+/1") == 3
    assert store.topics("a/+") == {"a/1": 1, "a/2": 1, "a/3": 1}
    assert store.last_message("#/2").seq == 3  # a third filter: "a/+" (least recently used) goes
    store.delete(1)
    store.purge("b/1", keep=1)
    assert seqs_of(store, "a/+") == [3, 4]  # rebuilt
    assert seqs_of(store, "+/1") == [5]
    assert seqs_of(store, "#/2") == [3]
    store.purge()
    assert store.count_pending(0, "a/+") == 0 and store.last_message("+/1") is None
    store.append("a/9", None, b"", timestamp=7)
    assert seqs_of(store, "a/+") == [6] and seqs_of(store, "+/1") == []


def test_filtered_walk_over_many_topics_is_not_quadratic(harness):
    store = harness.make()
    count = 5000
    for i in range(count):
        store.append("k/%d" % i, None, b"v", timestamp=i)
    started = time.monotonic()
    seq, seen = 1, 0
    while True:
        message = store.next_message(seq, "k/+")
        if message is None:
            break
        store.count_pending(message.seq + 1, "k/+")
        seq, seen = message.seq + 1, seen + 1
    assert seen == count
    assert time.monotonic() - started < 2.0


def test_closed_file_store_refuses_appends(tmp_path):
    store = FileStore(str(tmp_path), Limits())
    store.close()
    with pytest.raises(ValueError):
        store.append("t", None, b"")


def test_last_message(harness):
    store = harness.make()
    fill(store, ["a/1", "b/1", "a/2", "b/2"])
    store.delete(4)
    for s in (store, harness.reopen()):
        assert s.last_message().seq == 3
        assert s.last_message("a/+").seq == 3
        assert s.last_message("b/+").seq == 2
        assert s.last_message("b/1").seq == 2
        assert s.last_message("c") is None
    harness.store.purge()
    assert harness.store.last_message() is None


def test_seq_for_time(harness):
    store = harness.make()
    for i, stamp in enumerate([10, 20, 20, 30, 40]):
        store.append("t", None, b"%d" % i, timestamp=stamp)
    store.delete(4)
    for s in (store, harness.reopen()):
        assert s.seq_for_time(0) == 1
        assert s.seq_for_time(10) == 1
        assert s.seq_for_time(15) == 2
        assert s.seq_for_time(20) == 2
        assert s.seq_for_time(25) == 5  # 4 is deleted
        assert s.seq_for_time(40) == 5
        assert s.seq_for_time(41) == 6


def test_count_pending(harness):
    store = harness.make()
    fill(store, ["a/1", "b/1", "a/2", "b/2", "a/1", "c"])
    store.delete(3)
    for s in (store, harness.reopen()):
        assert s.count_pending(1) == 5
        assert s.count_pending(0) == 5
        assert s.count_pending(3) == 3
        assert s.count_pending(4) == 3
        assert s.count_pending(7) == 0
        assert s.count_pending(1, "a/+") == 2
        assert s.count_pending(2, "a/1") == 1
        assert s.count_pending(1, "#") == 5
        assert s.count_pending(1, "+/1") == 3
        assert s.count_pending(1, "x") == 0


def test_topics_and_state(harness):
    store = harness.make()
    state = store.state()
    assert (state.messages, state.first_seq, state.last_seq, state.num_subjects) == (0, 0, 0, 0)
    fill(store, ["a/1", "b/1", "a/2", "a/1"])
    store.delete(2)
    for s in (store, harness.reopen()):
        assert s.topics() == {"a/1": 2, "a/2": 1}
        assert s.topics("a/1") == {"a/1": 2}
        assert s.topics("+/2") == {"a/2": 1}
        assert s.topics("b/1") == {}
        state = s.state()
        assert state.messages == 3 and state.num_subjects == 2
        assert (state.first_seq, state.last_seq, state.num_deleted) == (1, 4, 1)
        assert (state.first_timestamp, state.last_timestamp) == (1000, 1003)
    harness.store.delete(1)
    state = harness.store.state()
    assert (state.first_seq, state.first_timestamp, state.num_deleted) == (3, 1002, 0)


# -- limits ------------------------------------------------------------------------


def test_max_msgs_discard_old(harness):
    store = harness.make(max_msgs=3)
    removed = []
    store.on_remove = lambda seq, topic: removed.append(seq)
    fill(store, ["t"] * 5)
    assert removed == [1, 2]
    for s in (store, harness.reopen()):
        state = s.state()
        assert (state.messages, state.first_seq, state.last_seq) == (3, 3, 5)
        assert s.get(2) is None and s.get(3).payload == b"m2"


def test_max_msgs_discard_new(harness):
    store = harness.make(max_msgs=2, discard_new=True)
    fill(store, ["t", "t"])
    with pytest.raises(LimitExceeded) as raised:
        store.append("t", None, b"x")
    assert str(raised.value) == MAX_MSGS == "maximum messages exceeded"
    state = store.state()
    assert (state.messages, state.last_seq) == (2, 2)
    store.delete(1)
    assert store.append("t", None, b"y", timestamp=1)[0] == 3


def test_max_bytes_discard_old_and_new(harness):
    store = harness.make(max_bytes=3 * 20)  # each message: 1 + 3 + 16 = 20 bytes
    removed = []
    store.on_remove = lambda seq, topic: removed.append(seq)
    for stamp in range(4):
        store.append("t", None, b"abc", timestamp=stamp)
    assert store.state().bytes == 60 and removed == [1]
    store.update_limits(Limits(max_bytes=60, discard_new=True))
    with pytest.raises(LimitExceeded) as raised:
        store.append("t", None, b"m99")
    with pytest.raises(LimitExceeded):
        store.append("t", None, b"")  # 17 bytes do not fit either
    assert str(raised.value) == MAX_BYTES == "maximum bytes exceeded"
    store.delete(2)
    assert store.append("t", None, b"abc", timestamp=9)[0] == 5


def test_max_bytes_message_larger_than_the_limit_drops_everything(harness):
    store = harness.make(max_bytes=50)
    fill(store, ["t"] * 2)
    seq, _ = store.append("t", None, b"x" * 100, timestamp=5)
    state = store.state()
    assert seq == 3 and state.messages == 0 and state.first_seq == 4 and state.last_seq == 3


def test_max_age_expire(harness):
    store = harness.make(max_age=100)
    for stamp in (1000, 1050, 1100, 1200):
        store.append("t", None, b"x", timestamp=stamp)
    removed = []
    store.on_remove = lambda seq, topic: removed.append(seq)
    assert store.expire(1149) == 1  # 1000 <= 1049
    assert store.expire(1150) == 1  # at exactly max_age old
    assert removed == [1, 2]
    for s in (store, harness.reopen()):
        assert s.state().first_seq == 3 and s.state().messages == 2
    assert harness.store.expire(10_000) == 2
    state = harness.store.state()
    assert (state.messages, state.first_seq, state.last_seq) == (0, 5, 4)
    assert harness.make(max_age=0).expire(10**20) == 0


def test_max_msgs_per_subject_drops_the_subjects_oldest(harness):
    store = harness.make(max_msgs_per_subject=2)
    removed = []
    store.on_remove = lambda seq, topic: removed.append(seq)
    fill(store, ["a", "b", "a", "a", "b", "a"])
    assert removed == [1, 3]
    for s in (store, harness.reopen()):
        assert seqs_of(s) == [2, 4, 5, 6]
        assert s.topics() == {"a": 2, "b": 2}
        assert s.state().num_deleted == 1


def test_per_subject_unlimited_values(harness):
    for value in (0, -1):
        store = harness.make(max_msgs_per_subject=value)
        fill(store, ["a"] * 5)
        assert store.state().messages == 5
        if harness.kind == "file":
            store.close()
            import shutil

            shutil.rmtree(harness.directory)


def test_discard_new_per_subject(harness):
    store = harness.make(max_msgs_per_subject=1, discard_new_per_subject=True)
    fill(store, ["a", "b"])
    with pytest.raises(LimitExceeded) as raised:
        store.append("a", None, b"x")
    assert str(raised.value) == MAX_MSGS_PER_SUBJECT == "maximum messages per subject exceeded"
    assert store.state().messages == 2


def test_discard_new_with_subject_limit_replaces_instead_of_refusing(harness):
    # At max_msgs, a message that pushes out its own subject's oldest adds none.
    store = harness.make(max_msgs=2, max_msgs_per_subject=1, discard_new=True)
    fill(store, ["a", "b"])
    assert store.append("a", None, b"new", timestamp=9)[0] == 3
    assert seqs_of(store) == [2, 3]
    with pytest.raises(LimitExceeded):
        store.append("c", None, b"x")


def test_max_msg_size(harness):
    store = harness.make(max_msg_size=10)
    store.append("a-long-topic-does-not-count", None, b"x" * 10, timestamp=1)
    with pytest.raises(LimitExceeded) as raised:
        store.append("t", None, b"x" * 11)
    assert str(raised.value) == MAX_MSG_SIZE == "message size exceeds maximum allowed"
    with pytest.raises(LimitExceeded):
        store.append("t", [("h", "v")], b"x" * 5)  # 6 + 2 header bytes + 5
    assert store.state().last_seq == 1


def test_update_limits_applies_at_once(harness):
    store = harness.make()
    fill(store, ["a", "b", "a", "a", "b", "c"])
    removed = []
    store.on_remove = lambda seq, topic: removed.append(seq)
    store.update_limits(Limits(max_msgs_per_subject=1))
    assert sorted(removed) == [1, 2, 3]
    assert seqs_of(store) == [4, 5, 6]
    store.update_limits(Limits(max_msgs=2))
    assert seqs_of(store) == [5, 6]
    for s in (store, harness.reopen()):
        assert seqs_of(s) == [5, 6] and s.limits.max_msgs == 2
    harness.store.update_limits(Limits(max_bytes=20))
    assert seqs_of(harness.store) == [6]


# -- delete and purge ----------------------------------------------------------------


def test_delete(harness):
    store = harness.make()
    fill(store, ["a", "b", "c", "d"])
    removed = []
    store.on_remove = lambda seq, topic: removed.append(seq)
    assert store.delete(2) is True
    assert store.delete(2) is False
    assert store.delete(99) is False and store.delete(0) is False
    assert store.delete(3, erase=True) is True
    assert removed == [2, 3]
    for s in (store, harness.reopen()):
        assert s.get(2) is None and s.get(3) is None
        assert seqs_of(s) == [1, 4]
        assert s.state().num_deleted == 2
    harness.store.delete(4)
    state = harness.store.state()
    assert (state.first_seq, state.last_seq, state.messages, state.last_timestamp) == (1, 4, 1, 1000)
    harness.store.delete(1)
    state = harness.reopen().state()
    assert (state.first_seq, state.last_seq, state.messages) == (5, 4, 0)
    assert harness.store.append("e", None, b"", timestamp=1)[0] == 5


def test_purge_all(harness):
    store = harness.make()
    fill(store, ["a", "b"] * 5)
    removed = []
    store.on_remove = lambda seq, topic: removed.append(seq)
    assert store.purge() == 10
    assert removed == list(range(1, 11))
    for s in (store, harness.reopen()):
        state = s.state()
        assert (state.messages, state.bytes, state.first_seq, state.last_seq, state.num_subjects) == (0, 0, 11, 10, 0)
        assert s.next_message(0) is None and s.topics() == {}
    assert harness.store.append("a", None, b"", timestamp=1)[0] == 11
    assert harness.store.purge("#") == 1


def test_purge_by_filter(harness):
    store = harness.make()
    fill(store, ["a/1", "b/1", "a/2", "b/2", "a/1"])
    assert store.purge("a/+") == 3
    for s in (store, harness.reopen()):
        assert seqs_of(s) == [2, 4] and s.topics() == {"b/1": 1, "b/2": 1}
        assert s.state().first_seq == 2
    assert harness.store.purge("b/1") == 1
    assert harness.store.purge("nothing") == 0
    assert harness.store.state().first_seq == 4


def test_purge_up_to_seq_excludes_that_seq(harness):
    store = harness.make()
    fill(store, ["a", "b"] * 5)
    assert store.purge(up_to_seq=4) == 3
    assert seqs_of(store)[0] == 4
    assert store.purge("a", up_to_seq=8) == 2  # 5 and 7
    for s in (store, harness.reopen()):
        assert seqs_of(s) == [4, 6, 8, 9, 10]


def test_purge_keep(harness):
    store = harness.make()
    fill(store, ["a", "b", "a", "b", "a", "a"])
    assert store.purge(keep=5) == 1
    assert store.purge("a", keep=2) == 1  # of a: 3, 5, 6 -> keep 5, 6
    assert seqs_of(store) == [2, 4, 5, 6]
    assert store.purge(keep=10) == 0
    assert store.purge("b", keep=1, up_to_seq=3) == 1  # 2 goes; 4 is kept anyway
    for s in (store, harness.reopen()):
        assert seqs_of(s) == [4, 5, 6]
    assert harness.store.purge(keep=1) == 2
    assert seqs_of(harness.store) == [6]


def test_purge_up_to_beyond_the_end_moves_the_stream_on(harness):
    store = harness.make()
    fill(store, ["a"] * 3)
    assert store.purge(up_to_seq=100) == 3
    for s in (store, harness.reopen()):
        state = s.state()
        assert (state.first_seq, state.last_seq) == (100, 99)
    assert harness.store.append("a", None, b"", timestamp=1)[0] == 100


def test_sequences_are_never_reused(harness):
    store = harness.make()
    fill(store, ["a"] * 3)
    store.delete(3)
    assert harness.reopen().append("a", None, b"", timestamp=1)[0] == 4
    harness.store.purge()
    assert harness.reopen().append("a", None, b"", timestamp=1)[0] == 5


def test_stored_message_equality():
    one = StoredMessage(1, "t", None, b"x", 5, 18)
    assert one == StoredMessage(1, "t", None, b"x", 5, 18)
    assert one != StoredMessage(2, "t", None, b"x", 5, 18)
    assert "seq=1" in repr(one)
