"""Where a core consumer starts and what it reads (flowmq/core/streams/cursor.py):
start positions, topic filters, pending counts."""

from __future__ import annotations

import pytest

from flowmq.core.store import MemoryStore
from flowmq.core.streams import cursor
from flowmq.core.streams.cursor import Cursor


def _store():
    """seq 1 a/x, 2 b/y, 3 a/x, 4 a/z, 5 b/y (timestamps 1000, 2000 ... ns)."""
    store = MemoryStore()
    for i, topic in enumerate(("a/x", "b/y", "a/x", "a/z", "b/y"), 1):
        store.append(topic, None, b"%d" % i, timestamp=i * 1000)
    return store


def _read(reader):
    seqs = []
    while True:
        stored = reader.next()
        if stored is None:
            return seqs
        seqs.append(stored.seq)


@pytest.mark.parametrize("position, options, expected", [
    (cursor.ALL, {}, [1, 2, 3, 4, 5]),
    (cursor.NEW, {}, []),
    (cursor.LAST, {}, [5]),
    (cursor.BY_SEQ, {"seq": 3}, [3, 4, 5]),
    (cursor.BY_TIME, {"timestamp": 2500}, [3, 4, 5]),
    (cursor.LAST_PER_TOPIC, {}, [3, 4, 5]),
])
def test_start_positions(position, options, expected):
    reader = Cursor(_store())
    reader.start(position, **options)
    assert reader.num_pending() == len(expected)
    assert _read(reader) == expected
    assert reader.num_pending() == 0


def test_filters_choose_the_topics_and_the_pending_count():
    store = _store()
    reader = Cursor(store, ["a/+"])
    reader.start(cursor.ALL)
    assert reader.num_pending() == 3
    assert reader.next().seq == 1
    assert reader.num_pending() == 2
    store.append("a/q", None, b"")
    reader.appended("a/q")
    store.append("c", None, b"")
    reader.appended("c")
    assert reader.num_pending() == 3
    assert _read(reader) == [3, 4, 6]


def test_last_per_topic_with_a_filter_then_what_comes():
    store = _store()
    reader = Cursor(store, ["b/#"])
    reader.start(cursor.LAST_PER_TOPIC)
    assert reader.next().seq == 5
    assert reader.has_read(2)  # older than the start: read past, never to come
    store.append("b/y", None, b"")
    reader.appended("b/y")
    assert _read(reader) == [6]


def test_unread_gives_the_same_message_again():
    reader = Cursor(_store())
    reader.start(cursor.LAST_PER_TOPIC)
    first = reader.next()
    reader.unread(first)
    assert reader.next().seq == first.seq
    reader.start(cursor.ALL)
    first = reader.next()
    reader.unread(first)
    assert reader.num_pending() == 5 and reader.next().seq == 1


def test_a_removed_message_leaves_the_pending_count():
    store = _store()
    reader = Cursor(store)
    reader.start(cursor.ALL)
    assert reader.num_pending() == 5
    store.delete(4)
    reader.removed(4, "a/z")
    assert reader.num_pending() == 4
    assert _read(reader) == [1, 2, 3, 5]


def test_has_read_counts_last_per_topic_seqs_still_to_come():
    reader = Cursor(_store())
    reader.start(cursor.LAST_PER_TOPIC)
    assert not reader.has_read(3) and not reader.has_read(5)
    assert reader.has_read(1)  # older than the start, never to be read
    reader.next()
    assert reader.has_read(3) and not reader.has_read(5)


def test_unknown_start_position_is_refused():
    with pytest.raises(ValueError):
        Cursor(_store()).start("sometime")
