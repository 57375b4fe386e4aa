"""NATS <-> Message (flowmq/nats/convert.py): round trips both ways through
the real header block, hostile names and values from other protocols, and
what a nats-py subscriber and a JetStream stream get of a message that
another protocol published."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import nats
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from flowmq.core.message import PROPERTY_HEADERS, Message, Properties
from flowmq.core.values import Timestamp
from flowmq.nats import codec, convert
from tests.conftest import flushed, run
from tests.store.test_store_records import _same, properties, typed_values


def _through_the_wire(headers, props):
    """What ``from_nats`` makes of the block ``to_nats`` builds, after
    the block has been parsed as the broker parses an HPUB's."""
    status, pairs = codec.parse_headers(codec.encode_headers(convert.to_nats(headers, props)))
    assert status == b""
    return convert.from_nats(pairs)


@settings(max_examples=300, deadline=None)
@given(headers=st.none() | st.lists(st.tuples(st.text(), typed_values()), min_size=1, max_size=6).map(tuple),
       props=st.none() | properties().filter(lambda p: p.items()))
def test_a_message_of_any_protocol_survives_nats_and_back(headers, props):
    assume(headers is not None or props is not None)  # else it goes as MSG, without a block
    back_headers, back_props = _through_the_wire(headers, props)
    assert _same(back_headers, headers)
    if props is None:  # None stands for what the headers give
        assert back_props in (None, convert.properties_of(headers))
    else:
        assert back_props == props


#: Header lines as a NATS client can send them: a name of printable ASCII
#: without ':', a value without control characters or outer spaces.
_NAMES = st.one_of(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"),
                           min_size=1, max_size=12),
                   st.sampled_from(list(PROPERTY_HEADERS.values()) + ["content-type", "FlowMQ-Types"]))
_VALUES = st.one_of(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12).map(str.strip),
                    st.sampled_from(["0", "007", "255", "256", "true", "yes", "%41", "a%20b", "0i", "0p"]))


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(_NAMES, _VALUES), min_size=1, max_size=6).map(tuple))
def test_a_nats_publish_keeps_its_headers_and_renders_back_to_the_same_block(pairs):
    headers, props = convert.from_nats(pairs)
    block = codec.encode_headers(convert.to_nats(headers, props))
    again = convert.from_nats(codec.parse_headers(block)[1])
    assert _same(again[0] or None, headers or None)
    assert again[1] == props or (props is None and again[1] == convert.properties_of(headers))
    if pairs[-1][0].lower() != "flowmq-types":  # else it may be the rendered form, read as such
        assert codec.parse_headers(block) == codec.parse_headers(codec.encode_headers(pairs))


def test_property_headers_of_a_nats_publish_become_properties_and_stay_headers():
    pairs = (("Nats-Msg-Id", "id-7"), ("content-type", "text/plain"), ("FlowMQ-Priority", "5"),
             ("FlowMQ-QoS", "1"), ("FlowMQ-Correlation", "abc"), ("FlowMQ-UTF8", "true"), ("X", "y"))
    headers, props = convert.from_nats(pairs)
    assert headers == pairs
    assert props == Properties(message_id="id-7", content_type="text/plain", priority=5, qos=1,
                               correlation=b"abc", utf8=True)
    assert props.durable


def test_headers_without_properties_render_as_they_are():
    """A message stored without its properties (a record from before version
    2) goes to NATS subscribers as it was published."""
    pairs = (("Nats-Msg-Id", "id-7"), ("Content-Type", "text/plain"), ("X", "y"))
    assert convert.to_nats(pairs, None) == pairs
    assert convert.header_block_length(pairs, None) == len(codec.encode_headers(pairs))


def test_a_nats_publish_is_replayed_by_jetstream_with_the_headers_it_was_published_with(broker):
    published = {"Nats-Msg-Id": "id-1", "Content-Type": "text/plain", "FlowMQ-Priority": "3", "X-Other": "x"}

    async def main():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="PLAIN", subjects=["plain.>"], storage="file")
        await js.publish("plain.a", b"hi", headers=published)
        stored = await js.get_msg("PLAIN", 1)
        sub = await js.pull_subscribe("plain.>", durable="d")
        [replayed] = await sub.fetch(1, timeout=10)
        await nc.close()
        return stored, replayed

    stored, replayed = run(main())
    assert stored.headers == published
    assert replayed.headers == published
    kept = broker.call(lambda: broker.service.jetstream.streams["PLAIN"].store.get(1))
    assert kept.headers == tuple(published.items())


@pytest.mark.parametrize("text", ["007", "256", "-1", "+5", "five", "1e3"])
def test_a_property_header_that_is_not_the_propertys_own_rendering_stays_a_header_only(text):
    headers, props = convert.from_nats((("FlowMQ-Priority", text),))
    assert headers == (("FlowMQ-Priority", text),)
    assert props is None


@pytest.mark.parametrize("marker", [
    "garbage", "9i", "0i 0s", "0x", "0i", "-1i", "0Fp",
])
def test_a_forged_types_line_leaves_the_headers_as_they_came(marker):
    pairs = (("X", "not-a-number"), ("FlowMQ-Types", marker))
    assert convert.from_nats(pairs) == (pairs, None)


def test_a_nats_publisher_can_send_the_rendered_form():
    pairs = (("Retries", "3"), ("Blob", "%00%FF"), ("Nats-Msg-Id", "m"), ("FlowMQ-Types", "0i 1b 2p"))
    assert convert.from_nats(pairs) == ((("Retries", 3), ("Blob", b"\x00\xff")), Properties(message_id="m"))


HOSTILE = [
    ("a\r\nInjected: 1", "v"),
    ("b", "v\r\nInjected: 2"),
    ("c", "\r\n\r\nPUB evil 0\r\n"),
    ("d: e", " padded "),
    ("", ""),
    ("%", "%"),
    ("caf\u00e9 \u00fc", "\udc80 lone surrogate"),
    ("nul\x00", "nul\x00"),
    ("FlowMQ-Types", "0i"),
    ("Content-Type", "not the property"),
    ("e", b"\r\nInjected: 3"),
]


def test_hostile_names_and_values_cannot_inject_header_lines():
    props = Properties(content_type="x\r\nInjected: 4", message_id="\n", type="t\x00", user_id=" u ")
    message = Message("t", b"", tuple(HOSTILE), properties=props)
    block = convert.header_block(message)
    lines = block[:-4].split(b"\r\n")
    # One line per header and property, and the FlowMQ-Types line: nothing else.
    assert len(lines) == 1 + len(HOSTILE) + len(props.items()) + 1
    assert block.count(b"\r\n") == len(lines) + 1 and b"\n" not in block.replace(b"\r\n", b"")
    assert all(b"\r" not in line and b"\x00" not in line for line in lines)
    for line in lines[1:]:
        name = line.partition(b":")[0]
        assert name and name == name.strip() and all(0x21 <= c <= 0x7E for c in name), line
    assert not any(line.startswith(b"Injected") for line in lines)
    parsed = NatsClient._parse_header_lines(block[len(b"NATS/1.0\r\n"):])  # what nats-py reads
    assert not any(key.startswith("Injected") for key in parsed)
    headers, back = convert.from_nats(codec.parse_headers(block)[1])
    assert _same(headers, tuple(HOSTILE))
    assert back == props


EVERY_PROPERTY = Properties(
    content_type="application/json", content_encoding="gzip", correlation=b"\x01corr", message_id="msg-1",
    key=b"user-42", timestamp=1_700_000_000_123_456_789, expiry=4_000_000_000_000_000_000, priority=7, qos=1,
    type="order.created", user_id="alice", app_id="shop", utf8=True,
)
TYPED = (("text", "plain"), ("count", 3), ("flag", False), ("ratio", 0.5), ("price", Decimal("9.99")),
         ("at", Timestamp(1_700_000_000)), ("raw", b"\xff\x00"), ("absent", None),
         ("x-death", ({"count": 1, "queue": "q"},)))
#: What a nats-py subscriber reads of that message (docs/ARCHITECTURE.md ("The message")).
EXPECTED_HEADERS = {
    "text": "plain", "count": "3", "flag": "false", "ratio": "0.5", "price": "9.99", "at": "1700000000",
    "raw": "%FF%00", "absent": "",
    "x-death": convert.to_nats((("x-death", ({"count": 1, "queue": "q"},)),), None)[0][1],
    "Content-Type": "application/json", "Content-Encoding": "gzip", "FlowMQ-Correlation": "%01corr",
    "Nats-Msg-Id": "msg-1", "FlowMQ-Key": "user-42", "FlowMQ-Timestamp": "1700000000123456789",
    "FlowMQ-Expiry": "4000000000000000000", "FlowMQ-Priority": "7", "FlowMQ-QoS": "1",
    "FlowMQ-Type": "order.created", "FlowMQ-User-Id": "alice", "FlowMQ-App-Id": "shop", "FlowMQ-UTF8": "true",
    "FlowMQ-Types": "1i 2t 3f 4d 5T 6b 7n 8A 9p 10p 11bp 12p 13bp 14ip 15ip 16ip 17ip 18p 19p 20p 21tp",
}


def _publish_in_process(broker, topic):
    """Publish as another protocol would: a Message built in the broker's thread."""
    def publish():
        broker.service.broker.publish(Message(topic, b"{}", TYPED, properties=EVERY_PROPERTY))
    broker.call(publish)


def test_a_message_from_another_protocol_reaches_a_nats_subscriber_with_the_documented_headers(broker):
    async def main():
        nc = await nats.connect(broker.url)
        sub = await nc.subscribe("orders.new")
        await flushed(nc)
        await asyncio.get_running_loop().run_in_executor(None, _publish_in_process, broker, "orders/new")
        msg = await sub.next_msg(timeout=10)
        await nc.close()
        return msg

    msg = run(main())
    assert msg.data == b"{}"
    assert msg.headers == EXPECTED_HEADERS
    # and a NATS client that sends those headers back publishes the same message
    pairs = tuple(msg.headers.items())
    headers, props = convert.from_nats(pairs)
    assert _same(headers, TYPED) and props == EVERY_PROPERTY


@pytest.mark.parametrize("storage", ["file", "memory"])
def test_a_jetstream_stream_stores_and_replays_the_properties(broker, storage):
    async def main():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.>"], storage=storage)
        await asyncio.get_running_loop().run_in_executor(None, _publish_in_process, broker, "orders/new")
        stored = await js.get_msg("ORDERS", 1)
        sub = await js.pull_subscribe("orders.>", durable="d")
        [replayed] = await sub.fetch(1, timeout=10)
        await nc.close()
        return stored, replayed

    stored, replayed = run(main())
    kept = broker.call(lambda: broker.service.jetstream.streams["ORDERS"].store.get(1))
    assert kept.properties == EVERY_PROPERTY and _same(kept.headers, TYPED)
    assert stored.headers == EXPECTED_HEADERS
    assert replayed.headers == EXPECTED_HEADERS


def test_hostile_headers_from_another_protocol_reach_a_raw_subscriber_as_one_well_formed_hmsg(broker, raw_client):
    client = raw_client()
    client.handshake()
    client.subscribe(b"evil")
    props = Properties(content_type="x\r\nInjected: 4", message_id="\r\n\r\nPUB x 0\r\n")

    def publish():
        broker.service.broker.publish(Message("evil", b"body", tuple(HOSTILE), properties=props))
    broker.call(publish)
    head = client.read_line().split()
    assert head[:3] == [b"HMSG", b"evil", b"1"], head
    header_size, total = int(head[3]), int(head[4])
    frame = client.read_exact(total + 2)
    block, payload = frame[:header_size], frame[header_size:total]
    assert payload == b"body" and frame[total:] == b"\r\n"
    status, pairs = codec.parse_headers(block)
    assert len(pairs) == len(HOSTILE) + len(props.items()) + 1
    assert not any(name.startswith("Injected") for name, _ in pairs)
    headers, back = convert.from_nats(pairs)
    assert _same(headers, tuple(HOSTILE)) and back == props
    client.send(b"PING\r\n")  # the connection is in step: nothing was injected
    assert client.read_line() == b"PONG"


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(_NAMES | st.text(max_size=4), _VALUES | typed_values(2)), max_size=5).map(tuple),
       props=st.sampled_from([None, Properties(message_id="id-7"), Properties(user_id="u", priority=3)]))
def test_the_counted_block_length_is_the_rendered_blocks(pairs, props):
    """Properties count as the lines they add (and a plain block as it is)."""
    if props is None and not pairs:
        assert convert.header_block_length(pairs, props) == 0
        return
    assert convert.header_block_length(pairs, props) == len(codec.encode_headers(convert.to_nats(pairs, props)))
    plain = (("Nats-Msg-Id", "id-7"), ("X", "y"))
    assert convert.header_block_length(plain, convert.properties_of(plain)) == len(codec.encode_headers(plain))


def test_a_publish_whose_rendered_block_holds_nothing_still_arrives_with_its_block(broker, raw_client):
    client = raw_client()
    client.handshake()
    client.subscribe(b"e")
    block = b"NATS/1.0\r\nFlowMQ-Types: \r\n\r\n"
    client.send(b"HPUB e %d %d\r\n%s\r\n" % (len(block), len(block), block))
    assert client.read_line() == b"HMSG e 1 %d %d" % (len(block), len(block))
    assert client.read_exact(len(block) + 2) == block + b"\r\n"
