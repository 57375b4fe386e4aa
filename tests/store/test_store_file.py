"""FileStore on disk: persistence across segments, compaction, erasure,
recovery from torn and corrupt files, and a stateful comparison with
MemoryStore under random operations and restarts."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.logger import formatEvent, globalLogPublisher

from flowmq.core.message import Properties
from flowmq.core.store import FileStore, LimitExceeded, Limits, MemoryStore, filestore, records
from flowmq.core.store.segment import segment_name

SEGMENT = 400


def open_store(directory, limits=None, segment_bytes=SEGMENT):
    return FileStore(str(directory), limits or Limits(), name="orders", segment_bytes=segment_bytes)


def contents(store):
    """Everything a restart must reproduce."""
    state = store.state()
    messages = [store.get(seq) for seq in range(max(state.first_seq, 1), state.last_seq + 1)]
    return state, store.topics(), [m for m in messages if m is not None]


def files(directory, suffix):
    """Segment (.log) or index (.idx) files, oldest first."""
    return sorted(name for name in os.listdir(directory) if name.endswith(suffix) and name[:20].isdigit())


def populate(store, count, topics=("a/1", "a/2", "b/1")):
    for i in range(count):
        headers = (("n", str(i)),) if i % 3 == 0 else None
        store.append(topics[i % len(topics)], headers, b"payload-%04d" % i, timestamp=1000 + i)


@pytest.fixture
def store_logs():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(e) for e in events if e.get("log_namespace") == "flowmq.store"]
    globalLogPublisher.removeObserver(events.append)


# -- persistence ---------------------------------------------------------------------


def test_reopen_reproduces_everything_across_segments(tmp_path):
    store = open_store(tmp_path)
    populate(store, 60)
    store.delete(7)
    store.delete(30, erase=True)
    store.purge("b/1", up_to_seq=40)
    store.purge(up_to_seq=5)
    store.update_limits(Limits(max_msgs_per_subject=15))
    assert len(files(tmp_path, ".log")) > 3
    before = contents(store)
    store.close()
    again = open_store(tmp_path)
    assert contents(again) == before
    assert again.append("a/1", None, b"next", timestamp=1)[0] == 61
    again.close()


def test_segments_roll_are_sealed_with_an_index_and_dead_ones_unlinked(tmp_path):
    store = open_store(tmp_path)
    populate(store, 40)
    store.flush()
    logs = files(tmp_path, ".log")
    assert logs[0] == segment_name(1) and len(logs) > 3
    assert files(tmp_path, ".idx") == [name[:-4] + ".idx" for name in logs[:-1]]
    store.purge(up_to_seq=25)
    remaining = files(tmp_path, ".log")
    assert len(remaining) < len(logs)
    first_base = int(remaining[0][:20])
    assert first_base <= 25 and int(remaining[1][:20]) > 25
    store.close()


def test_purge_everything_keeps_last_seq_with_no_message_left(tmp_path):
    store = open_store(tmp_path)
    populate(store, 30)
    store.purge()
    assert files(tmp_path, ".log") == [segment_name(31)]
    store.close()
    store = open_store(tmp_path)
    state = store.state()
    assert (state.messages, state.first_seq, state.last_seq) == (0, 31, 30)
    store.close()


def test_compaction_reclaims_dead_bytes(tmp_path):
    store = open_store(tmp_path, segment_bytes=2000)
    populate(store, 200)
    for seq in range(1, 201):
        if seq % 4:
            store.delete(seq)
    store.flush()
    size_before = sum(os.path.getsize(tmp_path / name) for name in files(tmp_path, ".log"))
    before = contents(store)
    store.compact()
    size_after = sum(os.path.getsize(tmp_path / name) for name in files(tmp_path, ".log"))
    assert size_after < size_before / 2
    assert contents(store) == before
    store.append("a/1", None, b"after", timestamp=5)
    before = contents(store)
    store.close()
    store = open_store(tmp_path, segment_bytes=2000)
    assert contents(store) == before
    store.close()


def test_erase_overwrites_the_bytes(tmp_path):
    store = open_store(tmp_path)
    store.append("t", None, b"SECRET-ONE", timestamp=1)
    store.append("t", None, b"SECRET-TWO", timestamp=2)
    store.append("t", None, b"plain", timestamp=3)
    store.delete(1, erase=True)  # still in the write buffer
    store.flush()
    store.delete(2, erase=True)  # already in the file
    store.close()
    for name in os.listdir(tmp_path):
        data = (tmp_path / name).read_bytes()
        assert b"SECRET" not in data
    store = open_store(tmp_path)
    assert [m.payload for m in contents(store)[2]] == [b"plain"]
    store.close()


def test_reads_from_buffer_and_disk_without_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(filestore, "CACHE_MSGS", 1)
    store = open_store(tmp_path, segment_bytes=1 << 20)
    populate(store, 20)
    path = tmp_path / segment_name(1)
    assert path.stat().st_size == 0  # nothing written before flush
    assert store.get(3).payload == b"payload-0002"  # from the buffer
    store.flush()
    assert path.stat().st_size > 0
    assert store.get(3).payload == b"payload-0002"  # with pread
    assert store.get(4).headers == (("n", "3"),)
    store.close()


def test_a_failed_write_leaves_no_partial_record(tmp_path, monkeypatch):
    store = open_store(tmp_path, segment_bytes=1 << 20)
    populate(store, 5)
    store.flush()
    populate(store, 5)
    real_write = os.write
    calls = []

    def failing(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:7])  # a short write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(OSError):
        store.flush()
    monkeypatch.setattr(os, "write", real_write)
    store.flush()  # the retry writes the whole buffer once
    before = contents(store)
    store.close()
    store = open_store(tmp_path, segment_bytes=1 << 20)
    assert contents(store) == before and before[0].messages == 10
    store.close()


def test_tombstone_file_is_rewritten_as_a_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(filestore, "TOMBSTONES_REWRITE_BYTES", 100)
    store = open_store(tmp_path, segment_bytes=1 << 20)
    populate(store, 50)
    for seq in range(2, 50, 2):
        store.delete(seq)
        store.flush()
    store.purge(up_to_seq=10)
    store.flush()
    assert len(records.decode((tmp_path / "tombstones.log").read_bytes())[0]) == 26  # 24 deletes, 2 FIRST
    store.compact()  # the compaction rewrites the tombstone file, grown past twice a snapshot
    tombstones = (tmp_path / "tombstones.log").read_bytes()
    found, stop = records.decode(tombstones)
    assert stop == len(tombstones) and len(found) == 2  # FIRST(10) and the 20 deletes above it
    before = contents(store)
    store.close()
    store = open_store(tmp_path, segment_bytes=1 << 20)
    assert contents(store) == before
    store.close()


def test_expire_survives_a_restart(tmp_path):
    store = open_store(tmp_path, Limits(max_age=10))
    populate(store, 30)
    assert store.expire(1015) == 6
    before = contents(store)
    store.close()
    store = open_store(tmp_path, Limits(max_age=10))
    assert contents(store) == before and store.state().first_seq == 7
    store.close()


# -- recovery ----------------------------------------------------------------------


def last_segment(directory):
    return directory / files(directory, ".log")[-1]


def record_offsets(path):
    entries, _stop = records.scan(path.read_bytes())
    return [(offset, length, seq) for offset, _t, length, seq, *_rest in entries]


def test_torn_tail_is_truncated_and_logged(tmp_path, store_logs):
    store = open_store(tmp_path)
    populate(store, 30)
    store.close()
    path = last_segment(tmp_path)
    offset, length, seq = record_offsets(path)[-1]
    os.truncate(path, offset + length - 5)
    store = open_store(tmp_path)
    state = store.state()
    assert (state.messages, state.last_seq) == (seq - 1, seq - 1)
    assert path.stat().st_size == offset
    assert store.append("a/1", None, b"x", timestamp=1)[0] == seq
    assert store_logs() == [
        "stream orders: segment %s truncated at offset %d: dropped %d bytes (torn or corrupt tail)"
        % (path.name, offset, length - 5)
    ]
    store.close()


def test_flipped_byte_drops_that_record_and_the_rest_of_the_segment(tmp_path, store_logs):
    store = open_store(tmp_path, segment_bytes=1 << 20)
    populate(store, 20)
    store.close()
    path = last_segment(tmp_path)
    offset, length, seq = record_offsets(path)[10]
    data = bytearray(path.read_bytes())
    data[offset + length - 2] ^= 0x40
    path.write_bytes(bytes(data))
    store = open_store(tmp_path, segment_bytes=1 << 20)
    assert [m.seq for m in contents(store)[2]] == list(range(1, seq))
    (line,) = store_logs()
    assert path.name in line and "offset %d" % offset in line and "dropped %d bytes" % (len(data) - offset) in line
    store.close()


def test_garbage_after_the_last_record(tmp_path, store_logs):
    store = open_store(tmp_path)
    populate(store, 20)
    before = contents(store)
    store.close()
    path = last_segment(tmp_path)
    size = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b"\x00garbage\xff" * 7)
    store = open_store(tmp_path)
    assert contents(store) == before
    (line,) = store_logs()
    assert "%s truncated at offset %d: dropped 63 bytes" % (path.name, size) in line
    store.close()


def test_a_huge_corrupt_length_is_refused_without_allocating(tmp_path, store_logs):
    store = open_store(tmp_path, segment_bytes=1 << 20)
    populate(store, 5)
    store.close()
    path = last_segment(tmp_path)
    offset, _length, _seq = record_offsets(path)[3]
    data = bytearray(path.read_bytes())
    data[offset + 5 : offset + 9] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    store = open_store(tmp_path, segment_bytes=1 << 20)
    assert store.state().messages == 3
    assert len(store_logs()) == 1
    store.close()


def test_missing_or_stale_index_is_rebuilt(tmp_path, store_logs):
    store = open_store(tmp_path)
    populate(store, 40)
    store.delete(3)
    before = contents(store)
    store.close()
    indexes = files(tmp_path, ".idx")
    os.unlink(tmp_path / indexes[0])
    (tmp_path / indexes[1]).write_bytes(b"FMQIDX01 not really")
    store = open_store(tmp_path)
    assert contents(store) == before
    assert files(tmp_path, ".idx") == indexes
    assert store_logs() == []
    store.close()


def _sizer(topic, headers, properties, payload_len):
    """A made-up accounting: 100 a message, 10 a header, 7 a property, 1 a payload byte."""
    return 100 + 10 * len(headers or ()) + 7 * len(properties.items() if properties else ()) + payload_len


def _sized(message):
    return _sizer(message.topic, message.headers, message.properties, len(message.payload))


def test_a_sizer_counts_the_bytes_and_its_figures_survive_a_reopen(tmp_path):
    """Bytes (and max_bytes) count the sizer's figures; reopening gets them
    back from the .idx of sealed segments and by scanning the rest (also
    when an .idx is gone, or is one of FMQIDX01, which had no such figures)."""
    def reopen():
        return FileStore(str(tmp_path), Limits(max_bytes=3000), name="orders", segment_bytes=SEGMENT, sizer=_sizer)

    store = reopen()
    populate(store, 40)
    store.append("a/1", (("n", "p"),), b"with-properties", properties=Properties(message_id="m", priority=3))
    assert contents(store)[2][-1].size == 100 + 10 + 14 + 15
    expected = sum(_sized(m) for m in contents(store)[2])
    assert store.state().bytes == expected <= 3000 < expected + _sizer("a/1", None, None, 12)
    assert [m.size for m in contents(store)[2]] == [_sized(m) for m in contents(store)[2]]
    before = contents(store)
    store.close()
    store = reopen()
    assert contents(store) == before
    store.close()
    indexes = files(tmp_path, ".idx")
    os.unlink(tmp_path / indexes[0])
    old = bytearray((tmp_path / indexes[1]).read_bytes())
    old[:8] = b"FMQIDX01"
    (tmp_path / indexes[1]).write_bytes(bytes(old))
    store = reopen()
    assert contents(store) == before
    store.close()


def test_corrupt_sealed_segment_keeps_the_later_ones(tmp_path, store_logs):
    store = open_store(tmp_path)
    populate(store, 40)
    store.close()
    logs = files(tmp_path, ".log")
    path = tmp_path / logs[1]
    entries = record_offsets(path)
    offset, length, bad_seq = entries[1]
    data = bytearray(path.read_bytes())
    data[offset + 20] ^= 0x01
    path.write_bytes(bytes(data))
    os.unlink(tmp_path / (logs[1][:-4] + ".idx"))
    store = open_store(tmp_path)
    lost = {seq for _o, _l, seq in entries[1:]}
    assert [m.seq for m in contents(store)[2]] == [seq for seq in range(1, 41) if seq not in lost]
    assert store.state().last_seq == 40
    (line,) = store_logs()
    assert logs[1] in line and "offset %d" % offset in line
    store.close()


def test_corruption_behind_a_valid_index_is_never_served(tmp_path, store_logs):
    store = open_store(tmp_path)
    populate(store, 40)
    store.close()
    path = tmp_path / files(tmp_path, ".log")[0]
    offset, length, seq = record_offsets(path)[2]
    data = bytearray(path.read_bytes())
    data[offset + length - 1] ^= 0x01  # same size: the .idx still matches
    path.write_bytes(bytes(data))
    store = open_store(tmp_path)
    assert store.get(seq) is None
    assert store.next_message(seq).seq == seq + 1
    assert any("unreadable" in line and path.name in line for line in store_logs())
    store.close()


def test_torn_tombstone_file(tmp_path, store_logs):
    store = open_store(tmp_path)
    populate(store, 10)
    store.delete(4)
    store.flush()
    store.close()
    with open(tmp_path / "tombstones.log", "ab") as handle:
        handle.write(b"\x01\x02\x03")
    store = open_store(tmp_path)
    assert store.get(4) is None and store.state().messages == 9
    (line,) = store_logs()
    assert "tombstones.log truncated" in line and "dropped 3 bytes" in line
    store.close()


# -- FileStore against MemoryStore ---------------------------------------------------

TOPICS = st.sampled_from(["a/1", "a/2", "b/1", "b/2/x", "c"])
FILTERS = st.sampled_from([None, "a/1", "a/+", "+/1", "#", "b/#", "#/x", "c", "none"])
LIMITS = st.sampled_from(
    [
        Limits(),
        Limits(max_msgs=8),
        Limits(max_bytes=300),
        Limits(max_msgs_per_subject=2),
        Limits(max_msgs=6, discard_new=True),
        Limits(max_msgs_per_subject=1, discard_new_per_subject=True),
        Limits(max_age=20),
        Limits(max_bytes=250, discard_new=True),
        Limits(max_msgs=5, max_msgs_per_subject=2, discard_new=True, max_msg_size=30),
    ]
)


class FileMatchesMemory(RuleBasedStateMachine):
    """Random operations on both stores, with random restarts of the FileStore."""

    directory = None
    runs = 0

    @initialize(limits=LIMITS)
    def start(self, limits):
        self.clock = 1000
        self.memory = MemoryStore(limits)
        self.removed_memory, self.removed_file = [], []
        self.memory.on_remove = lambda seq, topic: self.removed_memory.append((seq, topic))
        FileMatchesMemory.runs += 1
        self.path = self.directory / ("run%d" % self.runs)
        self.file = self.open()

    def open(self):
        store = FileStore(str(self.path), self.memory.limits, name="prop", segment_bytes=256)
        store.on_remove = lambda seq, topic: self.removed_file.append((seq, topic))
        return store

    def teardown(self):
        self.file.close()

    def both(self, method, *args):
        outcomes = []
        for store in (self.memory, self.file):
            try:
                outcomes.append(("ok", getattr(store, method)(*args)))
            except LimitExceeded as error:
                outcomes.append(("limit", str(error)))
        assert outcomes[0] == outcomes[1], (method, args, outcomes)
        return outcomes[0]

    @rule(topic=TOPICS, size=st.integers(0, 40), headers=st.booleans())
    def append(self, topic, size, headers):
        self.clock += 3
        self.both("append", topic, (("k", "v"),) if headers else None, b"p" * size, self.clock)

    @rule(data=st.data())
    def delete(self, data):
        last = self.memory.state().last_seq
        self.both("delete", data.draw(st.integers(0, last + 1)), data.draw(st.booleans()))

    @rule(topic_filter=FILTERS, up_to=st.none() | st.integers(0, 60), keep=st.none() | st.integers(0, 4))
    def purge(self, topic_filter, up_to, keep):
        self.both("purge", topic_filter, up_to, keep)

    @rule(back=st.integers(0, 60))
    def expire(self, back):
        self.both("expire", self.clock - back)

    @rule(limits=LIMITS)
    def update_limits(self, limits):
        self.both("update_limits", limits)

    @rule()
    def flush(self):
        self.file.flush()

    @rule()
    def compact(self):
        self.file.compact()

    @rule(data=st.data(), topic=TOPICS)
    def compact_while_changing(self, data, topic):
        """A compaction whose files are built (as on a worker thread) while
        messages come and go, then swapped in."""
        plan = self.file.plan_compaction()
        last = self.memory.state().last_seq
        for seq in data.draw(st.lists(st.integers(0, last + 1), max_size=4)):
            self.both("delete", seq, data.draw(st.booleans()))
        self.clock += 3
        self.both("append", topic, None, b"c", self.clock)
        if plan is not None:
            plan.build()
            self.file.finish_compaction(plan)

    @rule()
    def restart(self):
        self.file.close()
        self.file = self.open()

    @precondition(lambda self: self.memory.state().messages)
    @rule(data=st.data(), topic_filter=FILTERS)
    def queries(self, data, topic_filter):
        state = self.memory.state()
        start = data.draw(st.integers(0, state.last_seq + 1))
        self.both("next_message", start, topic_filter)
        self.both("count_pending", start, topic_filter)
        self.both("last_message", topic_filter)
        self.both("seq_for_time", data.draw(st.integers(990, self.clock + 1)))

    @invariant()
    def same_state(self):
        assert self.memory.state() == self.file.state()
        assert self.memory.topics() == self.file.topics()
        assert self.removed_memory == self.removed_file

    @invariant()
    def same_messages(self):
        last = self.memory.state().last_seq
        assert [self.memory.get(s) for s in range(last + 2)] == [self.file.get(s) for s in range(last + 2)]


def test_file_store_matches_memory_store(tmp_path):
    FileMatchesMemory.directory = tmp_path
    machine = FileMatchesMemory.TestCase
    machine.settings = settings(
        max_examples=150,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    machine().runTest()
