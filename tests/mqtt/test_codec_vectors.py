"""Known byte vectors: the examples of the MQTT 3.1.1 and 5.0 specifications,
and packets as common clients send them, decoded and encoded byte for byte."""

from __future__ import annotations

import pytest

from codec_helpers import decode_one
from flowmq.mqtt.codec import (Connack, Connect, Disconnect, MalformedPacket, Puback, Publish, Suback, Subscribe,
                               SubscriptionOptions, Unsuback, Unsubscribe, Will, encode)
from flowmq.mqtt.codec import packets as p
from flowmq.mqtt.codec.primitives import encode_string, encode_varint, read_string, read_varint
from flowmq.mqtt.codec.reasons import ALLOWED, NAMES, reason_name

# 3.1.1 §2.2.3 / 5.0 §1.5.5 Table 1-1: the edges of each Variable Byte Integer size.
VARINTS = [
    (0, b"\x00"), (127, b"\x7f"),
    (128, b"\x80\x01"), (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"),
    (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize("value, data", VARINTS)
def test_variable_byte_integer_table(value, data):
    assert encode_varint(value) == data
    assert read_varint(data, 0, len(data)) == (value, len(data))


def test_variable_byte_integer_limits():
    with pytest.raises(ValueError):
        encode_varint(268435456)
    with pytest.raises(MalformedPacket):
        read_varint(b"\xff\xff\xff\xff\x7f", 0, 5)
    with pytest.raises(MalformedPacket):
        read_varint(b"\x80\x80", 0, 2)  # cut short
    assert read_varint(b"\x80\x00", 0, 2) == (0, 2)  # not minimal: MQTT-1.5.5-1 binds the sender only


def test_utf8_string_example():
    """5.0 §1.5.4 Figure 1-2: "A\\u2A6D4" is 00 05 41 F0 AA 9B 94."""
    data = b"\x00\x05\x41\xf0\xaa\x9b\x94"
    assert encode_string("A\U0002A6D4") == data
    assert read_string(data, 0, len(data)) == ("A\U0002A6D4", 7)


def test_byte_order_mark_is_kept():
    """MQTT-1.5.4-3: 0xEF 0xBB 0xBF is U+FEFF wherever it appears, never stripped."""
    data = b"\x00\x04\xef\xbb\xbfa"
    assert read_string(data, 0, len(data)) == ("\ufeffa", 6)


# 3.1.1 Figure 3.6 / 5.0 Figure 3-6: the CONNECT variable header example (User Name, Password, Will QoS 1,
# Will Flag, Clean Start: flags 0xCE; Keep Alive 10; v5: Session Expiry Interval 10).
CONNECT_311 = (b"\x10\x29" b"\x00\x04MQTT" b"\x04" b"\xce" b"\x00\x0a"
               b"\x00\x06client" b"\x00\x04will" b"\x00\x03bye" b"\x00\x04user" b"\x00\x04pass")
CONNECT_5 = (b"\x10\x30" b"\x00\x04MQTT" b"\x05" b"\xce" b"\x00\x0a" b"\x05\x11\x00\x00\x00\x0a"
             b"\x00\x06client" b"\x00" b"\x00\x04will" b"\x00\x03bye" b"\x00\x04user" b"\x00\x04pass")

VECTORS = [
    ("CONNECT 3.1.1 spec example", 4, True, CONNECT_311,
     Connect(4, "client", True, 10, "user", b"pass", Will("will", b"bye", 1))),
    ("CONNECT 5.0 spec example", 5, True, CONNECT_5,
     Connect(5, "client", True, 10, "user", b"pass", Will("will", b"bye", 1), {"session_expiry_interval": 10})),
    # A 3.1.1 client with an empty client id, clean session, keep alive 60 (paho-mqtt's defaults).
    ("CONNECT as paho-mqtt sends it", 4, True, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
     Connect(4, "", True, 60)),
    ("CONNECT 3.1", 3, True, b"\x10\x11\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x03abc", Connect(3, "abc", True, 60)),
    ("CONNACK accepted", 4, False, b"\x20\x02\x00\x00", Connack(False, 0)),
    ("CONNACK session present", 4, False, b"\x20\x02\x01\x00", Connack(True, 0)),
    ("CONNACK 5 success, no properties", 5, False, b"\x20\x03\x00\x00\x00", Connack(False, 0)),
    # 3.1.1 Figure 3.11 / 5.0 Figure 3-9: topic "a/b", packet identifier 10 (v5: no properties).
    ("PUBLISH 3.1.1 spec example", 4, True, b"\x32\x07\x00\x03a/b\x00\x0a", Publish("a/b", b"", 1, packet_id=10)),
    ("PUBLISH 5.0 spec example", 5, True, b"\x32\x08\x00\x03a/b\x00\x0a\x00", Publish("a/b", b"", 1, packet_id=10)),
    ("PUBLISH QoS 0 retained", 4, True, b"\x31\x07\x00\x03a/bhi", Publish("a/b", b"hi", 0, True)),
    ("PUBACK", 4, True, b"\x40\x02\x00\x0a", Puback(10)),
    ("PUBACK 5 short form", 5, True, b"\x40\x02\x00\x0a", Puback(10)),
    ("PUBACK 5 reason only", 5, True, b"\x40\x03\x00\x0a\x10", Puback(10, 0x10)),
    ("PUBREC 5 with a reason string", 5, True, b"\x50\x09\x00\x0a\x80\x05\x1f\x00\x02no",
     p.Pubrec(10, 0x80, {"reason_string": "no"})),
    ("PUBREL", 4, True, b"\x62\x02\x00\x0a", p.Pubrel(10)),
    ("PUBCOMP", 4, False, b"\x70\x02\x00\x0a", p.Pubcomp(10)),
    # 3.1.1 Figure 3.21 / 5.0 Figure 3-21: "a/b" at QoS 1, "c/d" at QoS 2.
    ("SUBSCRIBE 3.1.1 spec example", 4, True, b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/d\x02",
     Subscribe(10, [("a/b", SubscriptionOptions(1)), ("c/d", SubscriptionOptions(2))])),
    ("SUBSCRIBE 5.0 with options", 5, True, b"\x82\x0f\x00\x0a\x00\x00\x03a/b\x2d\x00\x03c/d\x02",
     Subscribe(10, [("a/b", SubscriptionOptions(1, True, True, 2)), ("c/d", SubscriptionOptions(2))])),
    # 3.1.1 Figure 3.26: granted QoS 0, granted QoS 2, failure.
    ("SUBACK 3.1.1 spec example", 4, False, b"\x90\x05\x00\x0a\x00\x02\x80", Suback(10, [0, 2, 0x80])),
    ("SUBACK 5.0", 5, False, b"\x90\x05\x00\x0a\x00\x01\x8f", Suback(10, [1, 0x8F])),
    # 3.1.1 Figure 3.30: "a/b" and "c/d".
    ("UNSUBSCRIBE 3.1.1 spec example", 4, True, b"\xa2\x0c\x00\x0a\x00\x03a/b\x00\x03c/d",
     Unsubscribe(10, ["a/b", "c/d"])),
    ("UNSUBACK 3.1.1", 4, False, b"\xb0\x02\x00\x0a", Unsuback(10)),
    ("UNSUBACK 5.0", 5, False, b"\xb0\x05\x00\x0a\x00\x00\x11", Unsuback(10, [0x00, 0x11])),
    ("PINGREQ", 4, True, b"\xc0\x00", p.Pingreq()),
    ("PINGRESP", 5, False, b"\xd0\x00", p.Pingresp()),
    ("DISCONNECT", 4, True, b"\xe0\x00", Disconnect()),
    ("DISCONNECT 5 reason only", 5, False, b"\xe0\x01\x8b", Disconnect(0x8B)),
    # 5.0 Figure 3-24: Normal disconnection, Session Expiry Interval 0.
    ("DISCONNECT 5.0 spec example", 5, True, b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00",
     Disconnect(0, {"session_expiry_interval": 0})),
    ("AUTH 5 short form", 5, True, b"\xf0\x00", p.Auth()),
    ("AUTH 5 continue", 5, False, b"\xf0\x08\x18\x06\x15\x00\x03abc", p.Auth(0x18, {"authentication_method": "abc"})),
]


@pytest.mark.parametrize("name, level, to_server, data, packet", VECTORS, ids=[v[0] for v in VECTORS])
def test_spec_vector(name, level, to_server, data, packet):
    assert decode_one(data, level, to_server) == packet
    assert encode(packet, level) == data


def test_publish_topic_alias_with_empty_topic_is_legal_in_v5():
    data = b"\x30\x08\x00\x00\x03\x23\x00\x07hi"
    assert decode_one(data, 5) == Publish("", b"hi", properties={"topic_alias": 7})


def test_several_subscription_identifiers_to_a_client_keep_their_order():
    data = b"\x30\x0b\x00\x01t\x07\x0b\x05\x0b\x80\x01\x0b\x05"
    packet = decode_one(data, 5, to_server=False)
    assert packet.properties == {"subscription_identifier": [5, 128, 5]}


def test_user_properties_keep_order_and_repeats():
    props = {"user_property": [("b", "2"), ("a", "1"), ("b", "3")]}
    packet = decode_one(encode(Publish("t", b"", properties=props), 5), 5)
    assert packet.properties["user_property"] == [("b", "2"), ("a", "1"), ("b", "3")]


def test_reason_code_table():
    """5.0 Table 2-6: 43 codes; 0x00 is named by its packet."""
    assert len({code for _, code in NAMES}) == 43
    assert reason_name(p.CONNACK, 0x00) == "Success"
    assert reason_name(p.DISCONNECT, 0x00) == "Normal disconnection"
    assert reason_name(p.SUBACK, 0x00) == "Granted QoS 0"
    assert reason_name(p.PUBACK, 0x10) == "No matching subscribers"
    assert reason_name(p.PUBACK, 0x8B) == "0x8B"  # Server shutting down is a DISCONNECT code only
    assert ALLOWED[p.PUBREL] == {0x00, 0x92}
