"""Message and Properties (flowmq/core/message.py)."""

from __future__ import annotations

from flowmq.core.message import Message, MessageRun, Properties
from flowmq.core.values import Timestamp


def test_properties_default_to_unset_and_list_what_is_set_in_field_order():
    assert Properties().items() == []
    props = Properties(utf8=False, content_type="text/plain", priority=0)
    assert props.items() == [("content_type", "text/plain"), ("priority", 0), ("utf8", False)]
    assert repr(props) == "Properties(content_type='text/plain', priority=0, utf8=False)"


def test_durable_is_qos_at_least_one():
    assert [Properties(qos=qos).durable for qos in (None, 0, 1, 2)] == [False, False, True, True]


def test_properties_compare_by_value():
    assert Properties(key=b"k", qos=1) == Properties(qos=1, key=b"k")
    assert Properties(key=b"k") != Properties(key=b"j")
    assert Properties() != None  # noqa: E711 (the comparison itself is under test)


def test_a_message_carries_its_properties_and_starts_without_receipt_or_cache():
    props = Properties(message_id="m")
    message = Message("a/b", b"x", (("n", Timestamp(3)),), "r", None, props)
    assert (message.properties, message.receipt, message.wire_cache) == (props, None, None)
    assert repr(message.headers[0][1]) == "Timestamp(3)"


def test_a_run_of_messages_knows_their_one_payload_size_and_none_when_they_differ():
    same = [Message("a/b", payload) for payload in (b"xy", b"zw", b"uv")]
    mixed = [Message("a/b", payload) for payload in (b"xy", b"zw", b"u")]
    assert (MessageRun.of(same).size, MessageRun.of(mixed).size) == (2, None)
    assert [message.payload for message in MessageRun.of(mixed)] == [b"xy", b"zw", b"u"]
