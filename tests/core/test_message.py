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


def test_a_share_of_a_run_has_its_payloads_and_size_and_makes_only_its_first_message():
    first = Message("a/b", b"p0", None, "r")
    run = MessageRun(first, [b"p0", b"p1", b"p2", b"p3"], 2)
    share = run.share([1, 3])
    assert (share.payloads, share.size) == ([b"p1", b"p3"], 2)
    assert (share.first.topic, share.first.payload, share.first.reply_to) == ("a/b", b"p1", "r")
    assert run._messages is None  # the run made no Message for it
    assert [message.payload for message in share] == [b"p1", b"p3"]
    assert run.share([0, 2]).first is first
    made = run.messages()
    share = run.share([1, 2])
    assert share.first is made[1] and list(share) == made[1:3] and run.at(3) is made[3]  # made once, then shared
