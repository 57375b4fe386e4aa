"""The record's headers field, versions 1 and 2: a store written before
properties existed reads back as it was, and a store keeps a message's
typed header values and properties across a restart.

tests/store/fixtures/records_v1 is a FileStore written by FlowMQ before
version 2 (commit c58e3ed): four messages, the first deleted.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmq.core.message import Properties
from flowmq.core.store import records
from flowmq.core.store.datatypes import StoredMessage
from flowmq.core.store.filestore import FileStore
from flowmq.core.store.memory import MemoryStore
from flowmq.core.values import MAX_DEPTH, Timestamp, decode_value, encode_value

FIXTURE = Path(__file__).parent / "fixtures" / "records_v1"

#: What the fixture store holds (seq 1 was deleted).
V1_MESSAGES = [
    StoredMessage(2, "orders/us", (("Nats-Msg-Id", "m-2"), ("X-Tag", "a"), ("X-Tag", "b")), b"with headers",
                  1_700_000_000_000_000_002, 81),
    StoredMessage(3, "caf\u00e9/\u00fc", (("Name-\u00e9", "val\u00fc\udc80"),), b"\x00\xff binary",
                  1_700_000_000_000_000_003, 54),
    StoredMessage(4, "orders/eu", (("Empty", ""),), b"", 1_700_000_000_000_000_004, 36),
]

EVERY_PROPERTY = Properties(
    content_type="application/json", content_encoding="gzip", correlation=b"\x00corr\xff", message_id="id-1",
    key=b"k\x00", timestamp=1_700_000_000_123_456_789, expiry=1_800_000_000_000_000_000, priority=9, qos=2,
    type="order.created", user_id="alice", app_id="shop", utf8=True,
)

TYPED_HEADERS = (
    ("s", "text"), ("b", b"\x00\xff"), ("null", None), ("i", -(1 << 63)), ("t", True), ("f", False),
    ("d", 1.5), ("dec", Decimal("-12.340")), ("ts", Timestamp(1_700_000_000)),
    ("table", {"x-death": ({"count": 3, "queue": b"q", "time": Timestamp(5)},), "empty": {}}),
    ("array", (1, "two", None, ())), ("s", "repeated"),
)


def _messages(store):
    found, seq = [], 1
    while True:
        message = store.next_message(seq)
        if message is None:
            return found
        found.append(message)
        seq = message.seq + 1


def test_a_store_written_before_version_2_reads_back_identically(tmp_path):
    directory = tmp_path / "v1"
    shutil.copytree(FIXTURE, directory)
    store = FileStore(str(directory), name="v1")
    try:
        assert _messages(store) == V1_MESSAGES
        assert [store.get(seq) for seq in (2, 3, 4)] == V1_MESSAGES
        assert all(message.properties is None for message in V1_MESSAGES)
        state = store.state()
        assert (state.messages, state.first_seq, state.last_seq) == (3, 2, 4)
    finally:
        store.close()


def test_str_headers_without_properties_are_still_written_as_version_1():
    pairs = (("Nats-Msg-Id", "m-2"), ("X-Tag", "a"))
    assert records.encode_meta(pairs, None) == records.encode_headers(pairs)
    assert records.encode_meta(None, None) == b""


@pytest.mark.parametrize("make", [MemoryStore, None], ids=["memory", "file"])
def test_a_store_keeps_typed_headers_and_properties(tmp_path, make):
    store = make() if make else FileStore(str(tmp_path / "s"), name="s")
    seq, stamp = store.append("a/b", TYPED_HEADERS, b"body", properties=EVERY_PROPERTY)
    store.append("a/c", None, b"props only", properties=Properties(key=b"k"))
    store.append("a/d", (("plain", "v"),), b"neither")
    expected = [
        StoredMessage(1, "a/b", TYPED_HEADERS, b"body", stamp, store.get(1).size, EVERY_PROPERTY),
        StoredMessage(2, "a/c", None, b"props only", store.get(2).timestamp, store.get(2).size, Properties(key=b"k")),
        StoredMessage(3, "a/d", (("plain", "v"),), b"neither", store.get(3).timestamp, store.get(3).size),
    ]
    assert _messages(store) == expected
    if make is None:  # read back from disk, not from the write cache
        store.flush()
        store.close()
        store = FileStore(str(tmp_path / "s"), name="s")
        assert _messages(store) == expected
        assert [type(value) for _, value in store.get(1).headers] == [type(value) for _, value in TYPED_HEADERS]
        store.close()


def test_an_empty_properties_object_is_kept_as_none():
    store = MemoryStore()
    store.append("a", None, b"x", properties=Properties())
    assert store.get(1).properties is None


def test_a_later_versions_property_field_is_skipped():
    block = records.encode_meta((("h", 1),), Properties(priority=3))
    # Insert field number 200 (unknown here) before the known one.
    unknown = bytes((200,)) + encode_value(b"future")
    head = len(records._V2_HEAD)
    length = int.from_bytes(block[head:head + 4], "little") + len(unknown)
    forged = block[:head] + length.to_bytes(4, "little") + unknown + block[head + 4:]
    assert records.decode_meta(forged) == ((("h", 1),), Properties(priority=3))


@pytest.mark.parametrize("data", [
    records._V2_HEAD,  # no properties length
    records._V2_HEAD + b"\x05\x00\x00\x00",  # properties longer than the block
    records._V2_MARK + b"\x03" + b"\x00" * 4,  # an unknown version
    records._V2_HEAD + b"\x00\x00\x00\x00" + b"\x01\x00h",  # a header name without its value
    records._V2_HEAD + b"\x00\x00\x00\x00" + b"\x01\x00hZ",  # an unknown value tag
    records._V2_HEAD + b"\x00\x00\x00\x00" + b"\x01\x00hA\xff\xff\xff\xff",  # an array count past the end
    records._V2_HEAD + b"\x00\x00\x00\x00" + b"\x01\x00hM\x03\x00abc",  # a bad decimal
])
def test_a_malformed_version_2_block_is_an_error_not_a_crash(data):
    with pytest.raises(ValueError):
        records.decode_meta(data)


def test_values_nested_too_deep_or_out_of_range_are_refused():
    value = ()
    for _ in range(MAX_DEPTH + 1):
        value = (value,)
    with pytest.raises(ValueError):
        encode_value(value)
    with pytest.raises(ValueError):
        encode_value(1 << 63)
    with pytest.raises(ValueError):
        encode_value(object())
    with pytest.raises(ValueError):
        encode_value({1: "not a str name"})
    deep = b"A\x01\x00\x00\x00" * (MAX_DEPTH + 1) + b"N"
    with pytest.raises(ValueError):
        decode_value(deep)


def typed_values(max_leaves=8):
    scalars = st.one_of(
        st.text(), st.binary(), st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1),
        st.floats(allow_nan=False), st.decimals(allow_nan=False).filter(lambda d: d.is_finite()),
        st.integers(-(1 << 63), (1 << 63) - 1).map(Timestamp),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3).map(tuple),
                                st.dictionaries(st.text(max_size=5), inner, max_size=3)),
        max_leaves=max_leaves,
    )


def properties():
    optional = st.none
    return st.builds(
        Properties,
        content_type=optional() | st.text(), content_encoding=optional() | st.text(),
        correlation=optional() | st.binary(), message_id=optional() | st.text(), key=optional() | st.binary(),
        timestamp=optional() | st.integers(0, (1 << 63) - 1), expiry=optional() | st.integers(0, (1 << 63) - 1),
        priority=optional() | st.integers(0, 255), qos=optional() | st.integers(0, 2),
        type=optional() | st.text(), user_id=optional() | st.text(), app_id=optional() | st.text(),
        utf8=optional() | st.booleans(),
    )


def _same(a, b):
    """Equal, with the same types all the way down (1 == True == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    return a == b


@settings(max_examples=200, deadline=None)
@given(headers=st.none() | st.lists(st.tuples(st.text(), typed_values()), max_size=5).map(tuple),
       props=st.none() | properties())
def test_headers_and_properties_round_trip_through_a_record(headers, props):
    record = records.encode_message(7, 11, b"t", records.encode_meta(headers, props), b"p")
    decoded = records.decode_message(record)
    assert _same(decoded.headers, headers or None)
    assert decoded.properties == (props if props is not None and props.items() else None)
