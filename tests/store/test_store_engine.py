"""StorageEngine: fsync policies, dirty signalling, streams on disk, meta documents, safe names."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from flowmq.core.store import FileStore, Limits, MemoryStore, StorageEngine, safe_name, unsafe_name
from flowmq.core.store.names import MAX_FILE_NAME, file_name


@pytest.fixture
def fsyncs(monkeypatch):
    """Count os.fsync calls (they still happen)."""
    calls = []
    real = os.fsync

    def counting(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_fsync_always(tmp_path, fsyncs):
    engine = StorageEngine(str(tmp_path), fsync="always")
    store = engine.open_stream("jetstream", "s", Limits())
    store.append("t", None, b"x")
    assert not fsyncs
    engine.flush_all()
    assert fsyncs
    count = len(fsyncs)
    engine.flush_all()  # nothing dirty: nothing to sync
    assert len(fsyncs) == count
    store.append("t", None, b"y")
    engine.flush_all()
    assert len(fsyncs) > count
    engine.close()


def test_fsync_never(tmp_path, fsyncs):
    engine = StorageEngine(str(tmp_path), fsync="never")
    store = engine.open_stream("jetstream", "s", Limits())
    for _ in range(10):
        store.append("t", None, b"x")
        engine.flush_all()
    engine.write_meta("jetstream", "s", "config", {"a": 1})
    assert not fsyncs
    assert os.path.getsize(os.path.join(store.directory, "00000000000000000001.log")) > 0
    engine.close()  # close always makes everything durable
    assert fsyncs


def test_fsync_interval_with_a_clock(tmp_path, fsyncs):
    clock = Clock()
    engine = StorageEngine(str(tmp_path), fsync="interval", fsync_interval=1.0, clock=clock, compact_interval=0)
    store = engine.open_stream("jetstream", "s", Limits())
    store.append("t", None, b"x")
    engine.flush_all()
    engine.flush_all()
    assert not fsyncs and len(clock.getDelayedCalls()) == 1
    clock.advance(0.5)
    assert not fsyncs
    clock.advance(0.5)
    assert fsyncs and not clock.getDelayedCalls()
    count = len(fsyncs)
    engine.flush_all()  # nothing written: no timer
    assert not clock.getDelayedCalls()
    engine.write_meta("jetstream", "s", "config", {"a": 1})
    assert len(fsyncs) == count and len(clock.getDelayedCalls()) == 1
    clock.advance(1.0)
    assert len(fsyncs) == count + 2  # the document and its directory
    store.append("t", None, b"y")
    engine.flush_all()
    engine.close()
    assert not clock.getDelayedCalls()


def test_fsync_interval_without_a_clock_syncs_in_flush_all(tmp_path, fsyncs):
    engine = StorageEngine(str(tmp_path), fsync="interval", fsync_interval=0.0)
    store = engine.open_stream("jetstream", "s", Limits())
    store.append("t", None, b"x")
    engine.flush_all()
    assert fsyncs
    engine.close()


def test_unknown_policy_is_refused(tmp_path):
    with pytest.raises(ValueError):
        StorageEngine(str(tmp_path), fsync="sometimes")


def test_on_dirty_once_per_dirty_period(tmp_path):
    calls = []
    engine = StorageEngine(str(tmp_path), on_dirty=lambda: calls.append(1))
    one = engine.open_stream("jetstream", "one", Limits())
    two = engine.open_stream("jetstream", "two", Limits())
    memory = engine.open_stream("jetstream", "mem", Limits(), storage="memory")
    memory.append("t", None, b"x")
    assert calls == []
    one.append("t", None, b"x")
    one.append("t", None, b"x")
    two.append("t", None, b"x")
    two.delete(1)
    assert calls == [1]
    engine.flush_all()
    assert os.path.getsize(os.path.join(two.directory, "tombstones.log")) > 0
    one.purge()
    assert calls == [1, 1]
    engine.flush_all()
    engine.flush_all()
    assert calls == [1, 1]
    engine.close()


def test_open_stream_kinds_and_reuse(tmp_path):
    engine = StorageEngine(str(tmp_path))
    store = engine.open_stream("jetstream", "s", Limits(max_msgs=5))
    assert isinstance(store, FileStore)
    assert engine.open_stream("jetstream", "s", Limits(max_msgs=3)) is store and store.limits.max_msgs == 3
    with pytest.raises(ValueError):
        engine.open_stream("jetstream", "s", Limits(), storage="memory")
    assert isinstance(engine.open_stream("jetstream", "m", None, storage="memory"), MemoryStore)
    with pytest.raises(ValueError):
        engine.open_stream("jetstream", "x", Limits(), storage="tape")
    with pytest.raises(ValueError):
        engine.open_stream("jetstream", "", Limits())
    engine.close()


def test_streams_persist_and_are_listed(tmp_path):
    names = ["orders", "a/b.c", "..", "caf\u00e9 %2F", "tab\there"]
    engine = StorageEngine(str(tmp_path), segment_bytes=200)
    for name in names:
        store = engine.open_stream("jetstream", name, Limits())
        for i in range(10):
            store.append("t/%d" % i, None, name.encode("utf-8"), timestamp=i)
    engine.open_stream("jetstream", "memory-only", Limits(), storage="memory")
    engine.close()
    for entry in os.listdir(tmp_path / "streams"):
        assert re.fullmatch(r"[A-Za-z0-9_%-]+", entry)
    engine = StorageEngine(str(tmp_path), segment_bytes=200)
    assert engine.stream_names("jetstream") == sorted(names)
    for name in names:
        store = engine.open_stream("jetstream", name, Limits())
        assert store.state().messages == 10 and store.get(10).payload == name.encode("utf-8")
    engine.close()


def test_remove_stream_deletes_its_files(tmp_path):
    engine = StorageEngine(str(tmp_path))
    store = engine.open_stream("jetstream", "gone", Limits())
    store.append("t", None, b"x")
    engine.write_meta("jetstream", "gone", "config", {"x": 1})
    engine.open_stream("jetstream", "kept", Limits())
    directory = store.directory
    engine.remove_stream("jetstream", "gone")
    assert not os.path.exists(directory)
    assert engine.stream_names("jetstream") == ["kept"]
    assert engine.read_meta("jetstream", "gone", "config") is None
    fresh = engine.open_stream("jetstream", "gone", Limits())
    assert fresh is not store and fresh.state().last_seq == 0
    engine.close()


def test_meta_documents(tmp_path):
    engine = StorageEngine(str(tmp_path), fsync="always")
    assert engine.read_meta("jetstream", "s", "config") is None and engine.meta_keys("jetstream", "s") == []
    engine.write_meta("jetstream", "s", "config", {"name": "s", "subjects": ["a.>"], "max_msgs": -1})
    engine.write_meta("jetstream", "s", "consumer.alpha", {"ack_floor": 5})
    engine.write_meta("jetstream", "s", "consumer.b/../x", [1, 2, "\u00e9"])
    engine.write_meta("jetstream", "s", "consumer.alpha", {"ack_floor": 6})
    assert engine.read_meta("jetstream", "s", "consumer.alpha") == {"ack_floor": 6}
    assert engine.meta_keys("jetstream", "s") == ["config", "consumer.alpha", "consumer.b/../x"]
    assert engine.meta_keys("jetstream", "s", "consumer.") == ["consumer.alpha", "consumer.b/../x"]
    engine.delete_meta("jetstream", "s", "consumer.alpha")
    engine.delete_meta("jetstream", "s", "consumer.alpha")  # already gone: fine
    engine.close()
    engine = StorageEngine(str(tmp_path))
    assert engine.meta_keys("jetstream", "s") == ["config", "consumer.b/../x"]
    assert engine.read_meta("jetstream", "s", "consumer.b/../x") == [1, 2, "\u00e9"]
    assert engine.read_meta("jetstream", "s", "config")["subjects"] == ["a.>"]
    meta_dir = os.path.join(str(tmp_path), "streams", "s", "meta")
    assert not [name for name in os.listdir(meta_dir) if name.endswith(".tmp")]
    engine.close()


def test_unreadable_meta_document_is_none_with_a_warning(tmp_path):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        engine = StorageEngine(str(tmp_path))
        engine.write_meta("jetstream", "s", "config", {"a": 1})
        path = os.path.join(str(tmp_path), "streams", "s", "meta", "config.json")
        with open(path, "wb") as handle:
            handle.write(b'{"a": ')
        assert engine.read_meta("jetstream", "s", "config") is None
        engine.close()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any("meta document config is unreadable" in formatEvent(e) for e in events)


def test_long_names_and_keys_are_shortened_and_kept_beside(tmp_path):
    long_stream = "a-%" * 85  # 255 characters, 425 escaped
    emoji_stream = "\U0001f600" * 255  # 3060 bytes escaped
    long_key = "consumer." + "c" * 250
    engine = StorageEngine(str(tmp_path), fsync="always")
    for name in (long_stream, emoji_stream):
        store = engine.open_stream("jetstream", name, Limits())
        store.append("t", None, name.encode("utf-8"), timestamp=1)
        engine.write_meta("jetstream", name, long_key, {"durable": "c" * 250})
        engine.write_meta("jetstream", name, "consumer.short", {"ok": True})
    engine.close()
    for entry in os.listdir(tmp_path / "streams"):
        assert len(entry) <= MAX_FILE_NAME
    engine = StorageEngine(str(tmp_path))
    assert engine.stream_names("jetstream") == sorted([long_stream, emoji_stream])
    for name in (long_stream, emoji_stream):
        assert engine.open_stream("jetstream", name, Limits()).get(1).payload == name.encode("utf-8")
        assert engine.meta_keys("jetstream", name, "consumer.") == sorted([long_key, "consumer.short"])
        assert engine.read_meta("jetstream", name, long_key) == {"durable": "c" * 250}
        engine.delete_meta("jetstream", name, long_key)
        assert engine.meta_keys("jetstream", name) == ["consumer.short"]
        assert engine.read_meta("jetstream", name, long_key) is None
    meta_dir = os.path.join(engine.open_stream("jetstream", long_stream, None).directory, "meta")
    assert os.listdir(meta_dir) == ["consumer%2Eshort.json"]
    engine.remove_stream("jetstream", long_stream)
    assert engine.stream_names("jetstream") == [emoji_stream]
    engine.close()


@given(st.text(min_size=1, max_size=300))
def test_file_names_fit_and_differ(name):
    short = file_name(name)
    assert len(short) <= MAX_FILE_NAME and re.fullmatch(r"[A-Za-z0-9_%~-]+", short)
    assert short == safe_name(name) or file_name(name + "x") != short


@given(st.text(min_size=1))
def test_safe_names_are_reversible_and_safe(name):
    safe = safe_name(name)
    assert unsafe_name(safe) == name
    assert re.fullmatch(r"[A-Za-z0-9_%-]+", safe)


def test_safe_name_examples():
    assert safe_name("orders") == "orders"
    assert safe_name("a/b.c") == "a%2Fb%2Ec"
    assert safe_name("..") == "%2E%2E"
    assert safe_name("50%") == "50%25"
    assert unsafe_name("50%25") == "50%"


def test_compaction_sweep_wins_back_the_space_of_deleted_messages(tmp_path):
    clock = Clock()
    engine = StorageEngine(str(tmp_path), fsync="never", segment_bytes=4096, clock=clock, compact_interval=30.0)
    store = engine.open_stream("jetstream", "s", Limits())
    for i in range(200):
        store.append("t/%d" % (i % 5), None, b"x" * 100)
    for seq in range(2, 200, 2):  # every other message, from the middle of every segment
        store.delete(seq)
    engine.flush_all()
    directory = os.path.join(str(tmp_path), "streams", "s")

    def log_bytes():
        return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory) if f.endswith(".log"))

    before = log_bytes()
    clock.advance(30.0)
    after = log_bytes()
    assert after < before * 0.75
    assert [m.seq for m in (store.get(s) for s in range(1, 201)) if m is not None] == list(range(1, 200, 2)) + [200]
    engine.close()
    reopened = StorageEngine(str(tmp_path), fsync="never").open_stream("jetstream", "s", Limits())
    assert reopened.state().messages == 101
    assert reopened.get(3).payload == b"x" * 100


def test_a_sweep_touches_only_the_stores_changed_since_the_last(tmp_path, monkeypatch):
    """Before: every compaction sweep flushed (and rewrote the tombstones of)
    every open store, and every interval sync visited every one."""
    clock = Clock()
    engine = StorageEngine(str(tmp_path), fsync="interval", fsync_interval=1.0, clock=clock, compact_interval=30.0)
    stores = [engine.open_stream("jetstream", "s%d" % n, Limits()) for n in range(50)]
    for store in stores:
        store.append("t", None, b"x")
    engine.flush_all()
    clock.advance(30.0)  # the first sweep and sync: everyone changed
    touched = []
    for method in ("flush", "take_unsynced", "plan_compaction", "compact", "sync"):
        real = getattr(FileStore, method)
        monkeypatch.setattr(FileStore, method, lambda store, _real=real, _name=method: (
            touched.append((_name, store.name)), _real(store))[1])
    clock.advance(30.0)  # nothing changed: a sweep and syncs that touch no store
    assert touched == []
    stores[7].append("t", None, b"y")
    engine.flush_all()
    clock.advance(30.0)
    assert {name for _what, name in touched} == {"s7"}
    engine.close()


def test_compaction_swaps_in_what_was_built_aside(tmp_path):
    """A compaction planned, then messages deleted and erased while its files
    are built: the deleted stay deleted, and a segment erased after its copy
    was made keeps its erase (the copy is thrown away)."""
    store = FileStore(str(tmp_path), Limits(), name="s", segment_bytes=2048)
    for n in range(100):
        store.append("t/%d" % (n % 3), None, b"%03d" % n + b"." * 60, timestamp=n)
    for seq in range(1, 100, 2):
        store.delete(seq)
    plan = store.plan_compaction()
    assert plan is not None and plan.rewrites and store.plan_compaction() is None  # one at a time
    erased_segment = plan.rewrites[0]
    store.delete(60)  # stays deleted in the new file
    plan.build()  # (a worker thread would run this)
    store.delete(2, erase=True)  # after the copy, in the first rewritten segment: that rewrite is thrown away
    store.finish_compaction(plan)
    assert not [f for f in os.listdir(str(tmp_path)) if f.endswith(".compact")]
    live = [seq for seq in range(2, 101, 2) if seq not in (2, 60)]
    assert [m.seq for m in (store.get(s) for s in range(1, 101)) if m is not None] == live
    with open(erased_segment.path, "rb") as handle:
        assert b"001" + b"." * 60 not in handle.read()  # seq 2's payload
    store.close()
    reopened = FileStore(str(tmp_path), Limits(), name="s", segment_bytes=2048)
    assert [m.seq for m in (reopened.get(s) for s in range(1, 101)) if m is not None] == live
    assert reopened.get(62).payload == b"061" + b"." * 60
    reopened.close()
