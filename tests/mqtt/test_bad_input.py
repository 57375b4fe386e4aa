"""Bad input over real sockets: what the broker answers, and that it closes
the connection when it must while other clients keep working.

Each test talks to a running broker with the raw client of raw_mqtt.py and
asserts the exact bytes the server sends: the MQTT 5 reason code (a
DISCONNECT after the CONNECT, a CONNACK during it, 5.0 §4.13) or, at 3.1.1,
nothing but the close (3.1.1 §4.8). Where the spec leaves the server a
choice, the comment says which was made and what mosquitto 2.0.11 does.
Every test that breaks a connection also checks that ``witness`` (two
clients connected before it) can still publish and receive.
"""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from flowmq.mqtt import codec
from flowmq.mqtt.codec import packets as P
from flowmq.mqtt.codec.primitives import encode_varint
pytest_plugins = ("raw_mqtt",)  # its fixtures: mqtt_client, witness, make_witness

LEVELS = pytest.mark.parametrize("level", [P.MQTT_3_1_1, P.MQTT_5], ids=["3.1.1", "5.0"])


def raw(first: int, body: bytes) -> bytes:
    """A packet with its Remaining Length written for ``body``."""
    return bytes((first,)) + encode_varint(len(body)) + body


def string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def no_properties(level: int) -> bytes:
    """An empty property block where the level has one."""
    return b"\x00" if level == P.MQTT_5 else b""


def assert_refused(data: bytes, level: int, reason: int, packet_type=P.Disconnect) -> None:
    """``data`` is what the server sends before closing: at MQTT 5 a
    DISCONNECT (or a CONNACK during CONNECT) with ``reason`` and a Reason
    String that says why, and nothing else; nothing at 3.1.1 after CONNECT,
    which has no reason codes (3.1.1 §4.8)."""
    if level != P.MQTT_5:
        assert data == b""
        return
    decoder = codec.Decoder.for_client(P.MQTT_5)
    if packet_type is not P.Connack:
        decoder.feed(b"\x20\x03\x00\x00\x00")  # the CONNACK this connection had
    packets = decoder.feed(data)
    assert len(packets) == 1 and isinstance(packets[0], packet_type), packets
    assert packets[0].reason_code == reason, packets[0]
    assert set(packets[0].properties) == {"reason_string"} and packets[0].properties["reason_string"]


def connected(mqtt_client, level: int, client_id: str = "", **fields):
    client = mqtt_client(level)
    client.connect(client_id, **fields)
    return client


def connect_body(name: bytes, level: int, flags: int = 0x02, v5_shape: bool = False) -> bytes:
    """A CONNECT body by hand: protocol name and level, flags, keep alive 60, client id "c"."""
    return string(name) + bytes((level, flags)) + b"\x00\x3c" + (b"\x00" if v5_shape else b"") + string(b"c")


# -- before and during CONNECT -----------------------------------------------------------------


@pytest.mark.parametrize("name", [b"MQTX", b"mqtt", b"MQTT\x00"], ids=["MQTX", "lower-case", "NUL"])
def test_wrong_protocol_name_closes_without_connack(witness, mqtt_client, name):
    """MQTT-3.1.2-1: not MQTT, so no CONNACK (the server does not reveal
    itself); mosquitto closes the same way."""
    client = mqtt_client()
    client.send(raw(0x10, connect_body(name, 4)))
    assert client.read_until_closed() == b""
    witness.check()


@pytest.mark.parametrize("name, level, v5_shape", [(b"MQTT", 6, False), (b"MQTT", 6, True), (b"MQTT", 3, False),
                                                   (b"MQIsdp", 4, False), (b"MQIsdp", 5, True)],
                         ids=["6-3.1.1-body", "6-5.0-body", "MQTT-3", "MQIsdp-4", "MQIsdp-5"])
def test_unsupported_protocol_level_gets_connack_0x01(witness, mqtt_client, name, level, v5_shape):
    """MQTT-3.1.2-2 (3.1.1) / 5.0 §3.1.2.2: a level the name does not have
    (MQTT: 4 and 5, MQIsdp: 3). The client's format is unknown, so the
    answer is the 3.1.1 CONNACK with return code 0x01, which every client
    reads (mosquitto sends the same), then the close."""
    client = mqtt_client()
    client.send(raw(0x10, connect_body(name, level, v5_shape=v5_shape)))
    assert client.read_until_closed() == b"\x20\x02\x00\x01"
    witness.check()


@pytest.mark.parametrize("first", [b"\xc0\x00", raw(0x30, string(b"a/b") + b"x"),
                                   raw(0x82, b"\x00\x01" + string(b"a") + b"\x00")],
                         ids=["PINGREQ", "PUBLISH", "SUBSCRIBE"])
def test_packet_before_connect_closes(witness, mqtt_client, first):
    """MQTT-3.1.0-1: the first packet must be CONNECT; the level is unknown, so nothing is sent."""
    client = mqtt_client()
    client.send(first)
    assert client.read_until_closed() == b""
    witness.check()


@pytest.mark.parametrize("first", [0x11, 0x12, 0x18], ids=["0x1", "0x2", "0x8"])
def test_connect_fixed_header_flags_close(witness, mqtt_client, first):
    """MQTT-2.1.3-1: CONNECT's fixed-header flags are reserved (Malformed,
    found before the level is read: no CONNACK)."""
    client = mqtt_client()
    client.send(raw(first, connect_body(b"MQTT", 4)))
    assert client.read_until_closed() == b""
    witness.check()


@LEVELS
def test_connect_reserved_flag(witness, mqtt_client, level):
    """MQTT-3.1.2-3: the CONNECT flags' bit 0 is reserved: a Malformed
    Packet. A v5 CONNACK may carry the reason (5.0 §4.13.1: 0x81, no
    properties but the Reason String), a 3.1.1 one has no code for it: closed (mosquitto closes
    both without a CONNACK)."""
    client = mqtt_client(level)
    client.send(raw(0x10, connect_body(b"MQTT", level, flags=0x03, v5_shape=level == P.MQTT_5)))
    assert_refused(client.read_until_closed(), level, 0x81, P.Connack)
    witness.check()


def test_empty_client_id_without_clean_session_311(witness, mqtt_client):
    """MQTT-3.1.3-8: a 3.1.1 client with an empty id must ask for a clean
    session, else CONNACK 0x02 (identifier rejected) and the close."""
    client = mqtt_client(P.MQTT_3_1_1)
    client.send(P.Connect(P.MQTT_3_1_1, "", clean_start=False))
    assert client.read_until_closed() == b"\x20\x02\x00\x02"
    witness.check()


def test_empty_client_id_is_assigned_in_5(mqtt_client):
    """5.0 §3.1.3.1: an empty id without Clean Start is accepted at level 5, with an Assigned Client Identifier."""
    client = mqtt_client(P.MQTT_5)
    connack = client.connect("", clean=False)
    assert connack.properties["assigned_client_identifier"]


@LEVELS
def test_oversize_connect_closes_at_its_header(witness, mqtt_client, level):
    """Before CONNECT the limit is small (64 KiB: an unauthenticated peer may
    make the server hold that much). A CONNECT announcing more is refused as
    soon as its fixed header is read: the body never comes and the server
    does not wait for it. Its level is not known yet, so no CONNACK (mosquitto
    closes the same way)."""
    client = mqtt_client(level)
    client.send(b"\x10" + encode_varint(64 * 1024 + 1))
    assert client.read_until_closed() == b""
    witness.check()


def test_connect_just_under_the_connect_limit_is_accepted(mqtt_client):
    """The pre-CONNECT limit counts the whole packet: a 64 KiB CONNECT (a big Will, a long user name) is fine."""
    client = mqtt_client(P.MQTT_3_1_1)
    will = P.Will("w", b"w" * 60000)
    connect = codec.encode(P.Connect(4, "big", will=will, username=""), 4)
    connect = codec.encode(P.Connect(4, "big", will=will, username="u" * (64 * 1024 - len(connect))), 4)
    assert len(connect) == 64 * 1024
    client.send(connect)
    assert client.read_frame() == b"\x20\x02\x00\x00"
    client.assert_open()


# -- malformed packets and protocol errors after CONNECT --------------------------------------


MALFORMED = {
    "publish-qos-3": lambda level: raw(0x36, string(b"a") + b"\x00\x01" + no_properties(level) + b"x"),
    "dup-on-qos-0": lambda level: raw(0x38, string(b"a") + no_properties(level) + b"x"),
    "remaining-length-5-bytes": lambda level: b"\x30\xff\xff\xff\xff\x01",
    "packet-id-0": lambda level: raw(0x32, string(b"a") + b"\x00\x00" + no_properties(level) + b"x"),
    "type-0": lambda level: b"\x00\x00",
    "topic-runs-past-packet": lambda level: raw(0x30, b"\x00\x09ab"),
    "subscribe-filter-runs-past-packet": lambda level: raw(0x82, b"\x00\x01" + no_properties(level) + b"\x00\x05a"),
    "subscribe-without-options": lambda level: raw(0x82, b"\x00\x01" + no_properties(level) + string(b"a")),
    "pingreq-with-a-body": lambda level: b"\xc0\x01\x00",
    "pubrel-flags-0": lambda level: b"\x60\x02\x00\x01",
    "subscribe-flags-0": lambda level: raw(0x80, b"\x00\x01" + no_properties(level) + string(b"a") + b"\x00"),
    "unsubscribe-flags-0": lambda level: raw(0xA0, b"\x00\x01" + no_properties(level) + string(b"a")),
    "pingreq-flags-1": lambda level: b"\xc1\x00",
    "disconnect-flags-8": lambda level: b"\xe8\x00",
    "subscribe-options-reserved-bits": lambda level: raw(0x82, b"\x00\x01" + no_properties(level) + string(b"a")
                                                         + b"\xc0"),
}


@LEVELS
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_packet(witness, mqtt_client, level, case):
    """A Malformed Packet after CONNECT: v5 DISCONNECT 0x81, then the close
    (5.0 §4.13.1); 3.1.1 closes (§4.8). Reserved fixed-header flags are
    malformed (MQTT-2.1.3-1), as is any field that runs past the packet."""
    client = connected(mqtt_client, level)
    client.send(MALFORMED[case](level))
    assert_refused(client.read_until_closed(), level, 0x81)
    witness.check()


@LEVELS
def test_reserved_packet_type_15_before_5(witness, mqtt_client, level):
    """AUTH (15) is a reserved type in 3.1.1 (closed); in 5.0 an AUTH without
    an Authentication Method in CONNECT is a Protocol Error (5.0 §4.12)."""
    client = connected(mqtt_client, level)
    client.send(b"\xf0\x00")
    assert_refused(client.read_until_closed(), level, 0x82)
    witness.check()


@LEVELS
def test_second_connect(witness, mqtt_client, level):
    """MQTT-3.1.0-2: a second CONNECT is a Protocol Error."""
    client = connected(mqtt_client, level, "first")
    client.send(P.Connect(level, "second"))
    assert_refused(client.read_until_closed(), level, 0x82)
    witness.check()


@LEVELS
def test_server_packet_from_a_client(witness, mqtt_client, level):
    """A CONNACK is not sent to a server: a Protocol Error."""
    client = connected(mqtt_client, level)
    client.send(b"\x20\x02\x00\x00")
    assert_refused(client.read_until_closed(), level, 0x82)
    witness.check()


@LEVELS
@pytest.mark.parametrize("topic", [b"a/\xff", b"a/\xc0\xaf", b"\xed\xa0\x80", b"a/\x00/b"],
                         ids=["invalid-byte", "overlong", "surrogate", "U+0000"])
def test_bad_utf8_in_publish_topic(witness, mqtt_client, level, topic):
    """MQTT-1.5.4-1/-2: ill-formed UTF-8 and U+0000 in a string are a Malformed Packet."""
    subscriber = connected(mqtt_client, P.MQTT_3_1_1, "sub")
    subscriber.subscribe("#")
    client = connected(mqtt_client, level)
    client.send(raw(0x30, string(topic) + no_properties(level) + b"x"))
    assert_refused(client.read_until_closed(), level, 0x81)
    witness.check()
    # The "#" subscriber got the witness's message and nothing before it.
    assert subscriber.receive().topic == "witness/t"


@LEVELS
def test_bad_utf8_in_subscribe_filter(witness, mqtt_client, level):
    client = connected(mqtt_client, level)
    client.send(raw(0x82, b"\x00\x01" + no_properties(level) + string(b"a/\x00") + b"\x00"))
    assert_refused(client.read_until_closed(), level, 0x81)
    witness.check()


@LEVELS
@pytest.mark.parametrize("topic", ["a/+", "a/#", "#", "+"])
def test_wildcard_in_publish_topic(witness, mqtt_client, level, topic):
    """MQTT-3.3.2-2: a topic name has no wildcard; v5 DISCONNECT 0x90
    (Topic Name invalid; mosquitto says 0x82), 3.1.1 the close."""
    client = connected(mqtt_client, level)
    client.send(P.Publish(topic, b"x", 1, packet_id=1))
    assert_refused(client.read_until_closed(), level, 0x90)
    witness.check()


@LEVELS
def test_empty_topic_without_alias(witness, mqtt_client, level):
    """MQTT-4.7.3-1 (3.1.1) / 5.0 §3.3.2.1: an empty topic name (without a Topic Alias) is a Protocol Error."""
    client = connected(mqtt_client, level)
    client.send(raw(0x30, string(b"") + no_properties(level) + b"x"))
    assert_refused(client.read_until_closed(), level, 0x82)
    witness.check()


# -- sizes --------------------------------------------------------------------------------------


@pytest.fixture
def small_broker(start_broker):
    """A broker whose packets may be 1 KiB at most (the pre-CONNECT limit is then 1 KiB too)."""
    return start_broker(**{"mqtt.max_packet_size": 1024})


@LEVELS
def test_packet_too_large_after_connect(small_broker, make_witness, mqtt_client, level):
    """A packet over the broker's Maximum Packet Size (announced in the v5
    CONNACK): v5 DISCONNECT 0x95 (5.0 §3.2.2.3.6), 3.1.1 the close."""
    witness = make_witness(small_broker.mqtt_port)
    client = mqtt_client(level, small_broker.mqtt_port)
    connack = client.connect()
    if level == P.MQTT_5:
        assert connack.properties["maximum_packet_size"] == 1024
    client.send(codec.encode(P.Publish("a", b"x" * 1000), level))  # fits
    client.assert_open()
    client.send(codec.encode(P.Publish("a", b"x" * 1100), level))
    assert_refused(client.read_until_closed(), level, 0x95)
    witness.check()


@LEVELS
def test_connect_over_a_small_limit(small_broker, make_witness, mqtt_client, level):
    """The pre-CONNECT limit is the smaller of 64 KiB and max_packet_size."""
    witness = make_witness(small_broker.mqtt_port)
    client = mqtt_client(level, small_broker.mqtt_port)
    client.send(codec.encode(P.Connect(level, "x" * 1100), level))
    assert client.read_until_closed() == b""
    witness.check()


@LEVELS
@pytest.mark.parametrize("announced", [2 * 1024 * 1024, 268435455], ids=["2MiB", "max-varint"])
def test_remaining_length_that_never_completes(witness, mqtt_client, level, announced):
    """A header announcing more than the limit is refused as soon as it is
    read: the broker does not buffer the body (which here never comes)."""
    client = connected(mqtt_client, level)
    client.send(b"\x30" + encode_varint(announced) + string(b"a"))
    assert_refused(client.read_until_closed(), level, 0x95)
    witness.check()


@LEVELS
def test_remaining_length_sent_a_byte_at_a_time(witness, mqtt_client, level):
    """The same when the header itself arrives in pieces."""
    client = connected(mqtt_client, level)
    client.send_slowly(b"\x30" + encode_varint(2 * 1024 * 1024))
    assert_refused(client.read_until_closed(), level, 0x95)
    witness.check()


# -- MQTT 5 topic aliases and Receive Maximum ------------------------------------------------------


@pytest.mark.parametrize("alias", ["above", 0], ids=["above-maximum", "zero"])
def test_topic_alias_invalid(witness, mqtt_client, alias):
    """5.0 §3.3.2.3.4: an alias of 0 or above the server's Topic Alias Maximum: DISCONNECT 0x94."""
    client = mqtt_client(P.MQTT_5)
    maximum = client.connect().properties["topic_alias_maximum"]
    value = maximum + 1 if alias == "above" else 0
    if maximum:
        client.publish("alias/ok", b"x", properties={"topic_alias": maximum})  # the last valid one
    client.send(P.Publish("alias/t", b"x", properties={"topic_alias": value}))
    assert_refused(client.read_until_closed(), P.MQTT_5, 0x94)
    witness.check()


def test_receive_maximum_exceeded(witness, mqtt_client):
    """5.0 §3.3.4: a client may have Receive Maximum (the CONNACK's) QoS 1
    and 2 PUBLISHes unanswered by PUBACK/PUBCOMP; one more is DISCONNECT
    0x93. QoS 2 stays unanswered until its PUBREL is answered with PUBCOMP."""
    client = mqtt_client(P.MQTT_5)
    maximum = client.connect().properties["receive_maximum"]
    for packet_id in range(1, maximum + 1):
        client.send(P.Publish("rm/t", b"x", 2, packet_id=packet_id))
        assert client.read_packet() == P.Pubrec(packet_id)
    client.assert_open()
    client.send(P.Publish("rm/t", b"x", 1, packet_id=maximum + 1))
    assert_refused(client.read_until_closed(), P.MQTT_5, 0x93)
    witness.check()


def test_a_client_still_writing_after_its_disconnect_reads_it(witness, mqtt_client):
    """The Paho suite's test_flow_control2: a client over its Receive Maximum
    that goes on writing (the PUBRELs of its earlier PUBLISHes) is not reset:
    the server closes its side after the DISCONNECT 0x93 and drops what
    still comes, so the client reads the DISCONNECT, then the end."""
    client = mqtt_client(P.MQTT_5)
    maximum = client.connect().properties["receive_maximum"]
    client.send(b"".join(codec.encode(P.Publish("rm/t", b"x", 2, packet_id=packet_id), P.MQTT_5)
                         for packet_id in range(1, maximum + 2)))
    frames = [client.read_frame() for _ in range(maximum + 1)]
    for packet_id in range(1, maximum + 1):  # as a client answering the PUBRECs one by one would
        time.sleep(0.05)
        client.send(P.Pubrel(packet_id))  # a closed socket would reset: then a broken pipe here
    assert frames[:maximum] == [codec.encode(P.Pubrec(packet_id), P.MQTT_5) for packet_id in range(1, maximum + 1)]
    assert_refused(frames[maximum] + client.read_until_closed(), P.MQTT_5, 0x93)
    witness.check()


def test_receive_maximum_counts_only_unanswered(mqtt_client):
    """Answered PUBLISHes free their place: QoS 1 at PUBACK, QoS 2 at PUBCOMP,
    and a repeat of a QoS 2 id awaiting PUBREL takes none."""
    client = mqtt_client(P.MQTT_5)
    maximum = client.connect().properties["receive_maximum"]
    for packet_id in range(1, 2 * maximum + 1):
        client.publish("rm/t", b"x", 1, packet_id=packet_id)
    for packet_id in range(1, maximum):
        client.send(P.Publish("rm/t", b"x", 2, packet_id=packet_id))
        assert client.read_packet() == P.Pubrec(packet_id)
    client.send(P.Publish("rm/t", b"x", 2, packet_id=1, dup=True))  # a repeat
    assert client.read_packet() == P.Pubrec(1)
    client.publish("rm/t", b"x", 1, packet_id=maximum)  # the last place
    client.send(P.Pubrel(1))
    assert client.read_packet() == P.Pubcomp(1)
    client.publish("rm/t", b"x", 2, packet_id=maximum + 1)  # PUBCOMP freed one
    client.assert_open()


def test_no_receive_maximum_in_311(mqtt_client):
    """3.1.1 has no Receive Maximum: QoS 2 PUBLISHes awaiting PUBREL are not capped by it."""
    client = connected(mqtt_client, P.MQTT_3_1_1)
    for packet_id in range(1, 101):
        client.send(P.Publish("rm/t", b"x", 2, packet_id=packet_id))
        assert client.read_packet() == P.Pubrec(packet_id)
    client.assert_open()


# -- QoS 2 and acknowledgements -------------------------------------------------------------------


@LEVELS
def test_qos2_repeated_packet_id_is_not_delivered_twice(mqtt_client, level):
    """5.0 §4.3.3 / 3.1.1 §4.3.3: a PUBLISH repeating a packet id that awaits
    its PUBREL is the same message: PUBREC again, no second delivery. After
    PUBCOMP the id is free and a PUBLISH with it is a new message."""
    subscriber = connected(mqtt_client, P.MQTT_5, "q2-sub")
    subscriber.subscribe("q2/t", qos=2)
    client = connected(mqtt_client, level, "q2-pub")
    client.send(P.Publish("q2/t", b"first", 2, packet_id=7))
    assert client.read_packet() == P.Pubrec(7)
    for dup in (True, False):
        client.send(P.Publish("q2/t", b"first", 2, packet_id=7, dup=dup))
        assert client.read_packet() == P.Pubrec(7)
    client.send(P.Pubrel(7))
    assert client.read_packet() == P.Pubcomp(7)
    client.publish("q2/t", b"second", 2, packet_id=7)
    assert subscriber.receive().payload == b"first"
    assert subscriber.receive().payload == b"second"
    assert subscriber.settle() == []  # and no other copy


@LEVELS
def test_pubrel_for_unknown_packet_id(witness, mqtt_client, level):
    """A PUBREL nobody waits for: PUBCOMP, with 0x92 (Packet Identifier not
    found) in 5.0 (5.0 §3.7.2.1; mosquitto sends 0x00); the connection stays."""
    client = connected(mqtt_client, level)
    client.send(P.Pubrel(77))
    expected = b"\x70\x03\x00\x4d\x92" if level == P.MQTT_5 else b"\x70\x02\x00\x4d"
    assert client.read_frame() == expected
    client.assert_open()
    witness.check()


@LEVELS
def test_acknowledgements_for_unknown_packet_ids_are_ignored(mqtt_client, level):
    client = connected(mqtt_client, level)
    client.send(P.Puback(5))
    client.send(P.Pubrec(6))  # answered with a PUBREL 0x92 in 5.0 (3.1.1 a plain one): harmless either way
    client.send(P.Pubcomp(7))
    frame = client.read_frame()
    assert frame == (b"\x62\x03\x00\x06\x92" if level == P.MQTT_5 else b"\x62\x02\x00\x06")
    client.assert_open()


# -- SUBSCRIBE and UNSUBSCRIBE ------------------------------------------------------------------------


@LEVELS
def test_subscribe_with_invalid_filters(witness, mqtt_client, level):
    """Each filter is answered on its own: an invalid one gets 0x80 (3.1.1
    §3.9.3) or 0x8F (5.0), the valid ones their QoS, and the connection
    stays (mosquitto closes it instead)."""
    client = connected(mqtt_client, level)
    filters = [("ok/+", 1), ("a/#/b", 0), ("a+", 0), ("$share/g+/x", 0), ("$share/g", 0), ("", 0)]
    client.send(P.Subscribe(3, [(topic_filter, P.SubscriptionOptions(qos)) for topic_filter, qos in filters]))
    bad = 0x8F if level == P.MQTT_5 else 0x80
    codes = bytes((1, bad, bad, bad, bad, bad))
    head = b"\x00\x03" + no_properties(level)
    assert client.read_frame() == raw(0x90, head + codes)
    client.send(P.Publish("ok/t", b"still", 1, packet_id=1))
    assert client.read_unordered(2) == [P.Publish("ok/t", b"still", 1, packet_id=1), P.Puback(1)]
    witness.check()


def test_unsubscribe_invalid_filter_in_5(mqtt_client):
    """5.0 §3.11.3: UNSUBACK 0x8F for an invalid filter, 0x11 for a valid one never subscribed."""
    client = connected(mqtt_client, P.MQTT_5)
    client.subscribe("un/a")
    client.send(P.Unsubscribe(4, ["a/#/b", "un/b", "un/a"]))
    assert client.read_frame() == b"\xb0\x06\x00\x04\x00\x8f\x11\x00"
    client.assert_open()


@LEVELS
@pytest.mark.parametrize("first", [0x82, 0xA2], ids=["SUBSCRIBE", "UNSUBSCRIBE"])
def test_empty_subscribe_and_unsubscribe(witness, mqtt_client, level, first):
    """MQTT-3.8.3-2 (3.1.1 MQTT-3.8.3-3), MQTT-3.10.3-2: a SUBSCRIBE or
    UNSUBSCRIBE without a filter is a Protocol Error."""
    client = connected(mqtt_client, level)
    client.send(raw(first, b"\x00\x01" + no_properties(level)))
    assert_refused(client.read_until_closed(), level, 0x82)
    witness.check()


@LEVELS
def test_no_local_on_a_shared_subscription(witness, mqtt_client, level):
    """MQTT-3.8.3-4: No Local on a $share filter is a Protocol Error (mosquitto
    grants it). 3.1.1 has no No Local: the bit is reserved there (Malformed)."""
    client = connected(mqtt_client, level)
    client.send(raw(0x82, b"\x00\x01" + no_properties(level) + string(b"$share/g/a") + b"\x04"))
    assert_refused(client.read_until_closed(), level, 0x82 if level == P.MQTT_5 else 0x81)
    witness.check()


# -- keep alive ----------------------------------------------------------------------------------------


@LEVELS
def test_keep_alive_expiry(witness, mqtt_client, level):
    """MQTT-3.1.2-24: nothing from the client for 1.5 times its keep alive
    closes the connection; v5 is told DISCONNECT 0x8D (5.0 §3.1.2.10)."""
    client = mqtt_client(level)
    started = time.monotonic()
    client.connect(keep_alive=1)
    assert_refused(client.read_until_closed(), level, 0x8D)
    assert time.monotonic() - started >= 1.5  # never before 1.5 s of silence (later on a loaded machine)
    witness.check()


@LEVELS
def test_keep_alive_kept_by_pings(mqtt_client, level):
    """PINGREQs every 0.5 s keep a 1 s keep alive (1.5 s of grace) alive well past it."""
    client = mqtt_client(level)
    client.connect(keep_alive=1)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        time.sleep(0.5)
        client.assert_open()


@pytest.mark.parametrize("sent", [b"", b"\x10\x20\x00\x04MQ"], ids=["nothing", "part-of-a-connect"])
def test_no_connect_within_ping_interval(start_broker, make_witness, mqtt_client, sent):
    """A connection that has not sent its CONNECT after mqtt.ping_interval
    (limits.ping_interval, 120 s by default; mosquitto: 90 s) is closed, with
    nothing said (its level is unknown); one that has stays."""
    broker = start_broker(**{"mqtt.ping_interval": 1.0})
    witness = make_witness(broker.mqtt_port)
    idle = mqtt_client(P.MQTT_5, broker.mqtt_port)
    started = time.monotonic()
    idle.send(sent)
    connected_without_keep_alive = mqtt_client(P.MQTT_5, broker.mqtt_port)
    connected_without_keep_alive.connect(keep_alive=0)
    assert idle.read_until_closed() == b""
    assert time.monotonic() - started >= 1.0
    connected_without_keep_alive.assert_open()
    witness.check()


# -- slow and broken-up input ----------------------------------------------------------------------------


@LEVELS
def test_byte_at_a_time(mqtt_client, level):
    """CONNECT, SUBSCRIBE and a PUBLISH (with properties at 5.0) written one
    byte per segment are read as the same packets."""
    client = mqtt_client(level)
    client.send_slowly(codec.encode(P.Connect(level, "slow", keep_alive=30), level))
    assert client.read_packet().reason_code == 0
    client.send_slowly(codec.encode(P.Subscribe(1, [("slow/+", P.SubscriptionOptions(1))]), level))
    assert client.read_packet() == P.Suback(1, [1])
    properties = {"user_property": [("k", "v")], "content_type": "text/plain"} if level == P.MQTT_5 \
        else P.NO_PROPERTIES
    client.send_slowly(codec.encode(P.Publish("slow/t", b"payload" * 20, 1, packet_id=9, properties=properties),
                                    level))
    publish, puback = client.read_unordered(2)
    assert puback == P.Puback(9)
    assert (publish.topic, publish.payload, publish.qos) == ("slow/t", b"payload" * 20, 1)
    if level == P.MQTT_5:
        assert publish.properties["user_property"] == [("k", "v")]
        assert publish.properties["content_type"] == "text/plain"


# -- mutated packets: whatever the bytes, the broker answers as MQTT, never with its own fault ---------------


def _valid_packets():
    return [
        P.Publish("fuzz/a", b"payload", 1, packet_id=3, properties={
            "user_property": [("k", "v")], "message_expiry_interval": 60, "response_topic": "fuzz/r",
            "correlation_data": b"c", "content_type": "t", "payload_format_indicator": 1, "topic_alias": 2}),
        P.Publish("fuzz/b", b"", 2, packet_id=4),
        P.Subscribe(5, [("fuzz/+", P.SubscriptionOptions(1, True, True, 1)), ("$share/g/fuzz/#",
                                                                                P.SubscriptionOptions(2))],
                    {"subscription_identifier": [7], "user_property": [("a", "b")]}),
        P.Unsubscribe(6, ["fuzz/+", "x"]),
        P.Pubrel(4, 0, {"reason_string": "r"}),
        P.Puback(3, 0x10),
        P.Disconnect(0x04, {"session_expiry_interval": 0}),
    ]


def test_mutated_packets_get_mqtt_answers(witness, mqtt_client):
    """Valid v5 packets with random bytes changed, each on a connection of
    its own: the broker may answer or close as MQTT says, but never with its
    own fault (0x83 Implementation specific error), and it keeps serving."""
    rng = random.Random(11)
    originals = [codec.encode(packet, P.MQTT_5) for packet in _valid_packets()]
    decoder_errors = 0
    for attempt in range(150):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        client = connected(mqtt_client, P.MQTT_5, "fuzz-%d" % attempt)
        client.send(bytes(data))
        client.sock.shutdown(socket.SHUT_WR)  # an unfinished packet must not keep it waiting
        answer = client.read_until_closed()
        decoder = codec.Decoder.for_client(P.MQTT_5)
        decoder.feed(b"\x20\x03\x00\x00\x00")
        for packet in decoder.feed(answer):
            if isinstance(packet, P.Disconnect):
                assert packet.reason_code != 0x83, bytes(data)
                decoder_errors += 1
        client.close()
    assert decoder_errors  # some of them were refused by reason
    witness.check()


# -- input that comes with the CONNECT while its login is decided -------------------------------------------

#: "secret" as a bcrypt hash of cost 4: the first check of it runs on a worker thread, so that login waits.
SECRET_HASH = "$2b$04$vBgCR4O7DSgjA3tyYrJ07OrIR39JaIxtqOg4yIcHnBsIVyVOW20e2"


def _login_broker_and_watcher(start_broker, mqtt_client):
    """A broker with users "u" (a bcrypt password: its check takes a while)
    and "w", and a client of "w" subscribed to sec/#."""
    broker = start_broker(**{"auth.users": [{"name": "u", "password": SECRET_HASH},
                                            {"name": "w", "password": "w"}]})
    subscriber = mqtt_client(P.MQTT_3_1_1, broker.mqtt_port)
    subscriber.connect("sub", username="w", password=b"w")
    subscriber.subscribe("sec/#")
    return broker, subscriber


@LEVELS
@pytest.mark.parametrize("password", [b"wrong", b"secret"])
def test_publish_and_malformed_packet_behind_a_pending_login(start_broker, mqtt_client, level, password):
    """A CONNECT, a retained PUBLISH and a malformed packet in one segment
    while the login is checked: nothing is published (the login has not said
    yes when the malformed packet ends the connection), and the client, which
    has had no CONNACK (MQTT-3.2.0-1: nothing else comes first), is just closed."""
    broker, subscriber = _login_broker_and_watcher(start_broker, mqtt_client)
    client = mqtt_client(level, broker.mqtt_port)
    client.send(codec.encode(P.Connect(level, "bad", username="u", password=password), level)
                + codec.encode(P.Publish("sec/sneaked", b"x", retain=True), level) + b"\x00\x00")
    assert client.read_until_closed() == b""
    publisher = mqtt_client(P.MQTT_3_1_1, broker.mqtt_port)
    publisher.connect("pub", username="w", password=b"w")
    publisher.publish("sec/fair", b"y", 1)
    assert subscriber.receive().topic == "sec/fair"
    late = mqtt_client(P.MQTT_3_1_1, broker.mqtt_port)
    late.connect("late", username="w", password=b"w")
    late.subscribe("sec/#")
    assert late.settle() == []  # nothing retained either


@LEVELS
def test_packets_behind_a_pending_login_wait_for_it(start_broker, mqtt_client, level):
    """Without the malformed packet, the same segment logs in, then publishes."""
    broker, subscriber = _login_broker_and_watcher(start_broker, mqtt_client)
    client = mqtt_client(level, broker.mqtt_port)
    client.send(codec.encode(P.Connect(level, "good", username="u", password=b"secret"), level)
                + codec.encode(P.Publish("sec/t", b"x", 1, packet_id=1), level))
    assert client.read_packet().reason_code == 0
    assert client.read_packet() == P.Puback(1)
    assert subscriber.receive().topic == "sec/t"


# -- a reader that does not keep up ---------------------------------------------------------------


@LEVELS
def test_a_subscriber_that_stops_reading_is_cut_off_and_nobody_else_loses_anything(start_broker, make_witness,
                                                                                   mqtt_client, level):
    """The connection base's slow-consumer rules for MQTT: a subscriber that
    takes nothing while its output is backed up is closed (its v5 DISCONNECT
    0x97 queued behind what its socket did not take, so it reaches only a
    client that catches up within write_deadline), the publisher is held
    back meanwhile, not refused, and a subscriber that reads gets every
    message, byte for byte."""
    broker = start_broker(**{"mqtt.max_pending": 256 * 1024, "mqtt.stall_deadline": 0.5, "mqtt.write_deadline": 2.0})
    witness = make_witness(broker.mqtt_port)
    stuck = mqtt_client(level, broker.mqtt_port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect("stuck")
    stuck.subscribe("flood/#")
    reader = mqtt_client(P.MQTT_3_1_1, broker.mqtt_port)
    reader.connect("reader")
    reader.subscribe("flood/#")
    frame = codec.encode(P.Publish("flood/t", b"x" * 4096), P.MQTT_3_1_1)
    received = []
    thread = threading.Thread(target=lambda: received.append(_read_bytes(reader.sock, 2000 * len(frame))))
    thread.start()
    publisher = mqtt_client(P.MQTT_3_1_1, broker.mqtt_port)
    publisher.connect("flooder")
    for _ in range(20):  # 2,000 messages, 8 MB: far past the stuck one's max_pending
        publisher.send(frame * 100)
    thread.join(60)
    assert received == [frame * 2000]
    stuck.read_until_closed()
    witness.check()
    publisher.assert_open()


def _read_bytes(sock, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(1 << 20, size - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
