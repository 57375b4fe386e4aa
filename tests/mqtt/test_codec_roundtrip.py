"""Encode then decode gives the same packet: every control packet, both
directions, MQTT 3.1.1 and 5.0 (random topics, payloads, properties and
reason codes), and the packets whose 3.1 form differs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_helpers import FROM_CLIENT, FROM_SERVER, decode_one, packets
from flowmq.mqtt.codec import NO_PROPERTIES, Connack, Connect, Publish, Subscribe, SubscriptionOptions, Will, encode
from flowmq.mqtt.codec import packets as p

CASES = [(ptype, level, True) for ptype in FROM_CLIENT for level in (4, 5) if ptype != p.AUTH or level == 5]
CASES += [(ptype, level, False) for ptype in FROM_SERVER for level in (4, 5) if ptype != p.AUTH or level == 5]


@pytest.mark.parametrize("ptype, level, to_server", CASES,
                         ids=["%s-v%d-%s" % (p.TYPE_NAMES[t], lv, "c2s" if s else "s2c") for t, lv, s in CASES])
@settings(deadline=None, max_examples=60)
@given(data=st.data())
def test_encode_then_decode_gives_the_packet(ptype, level, to_server, data):
    packet = data.draw(packets(ptype, level, to_server))
    decoded = decode_one(encode(packet, level), level, to_server)
    assert decoded == packet
    assert type(decoded) is type(packet)


@pytest.mark.parametrize("level", [4, 5])
def test_packets_without_properties_share_one_empty_mapping(level):
    decoded = decode_one(encode(Publish("a/b", b"x", 1, packet_id=9), level), level)
    assert decoded.properties is NO_PROPERTIES
    with pytest.raises(TypeError):
        decoded.properties["content_type"] = "text/plain"


def test_mqtt_3_1_connect_uses_its_protocol_name():
    packet = Connect(3, "client-31", False, 30, "user", b"pw", Will("w/t", b"gone", 2, True))
    data = encode(packet, 3)
    assert data[2:11] == b"\x00\x06MQIsdp\x03"
    assert decode_one(data, 3) == packet


@pytest.mark.parametrize("packet", [
    Publish("a/b", b"payload", 1, True, True, 77),
    Subscribe(5, [("a/+", SubscriptionOptions(1)), ("#", SubscriptionOptions(2))]),
    p.Puback(5), p.Pubrel(6), p.Unsubscribe(7, ["a/b"]), p.Pingreq(), p.Disconnect(),
])
def test_mqtt_3_1_packets_round_trip(packet):
    assert decode_one(encode(packet, 3), 3) == packet


def test_mqtt_3_1_connack_has_no_session_present():
    """3.1's CONNACK first byte is reserved: it is written 0 and not read."""
    data = encode(Connack(True, 0), 3)
    assert data == b"\x20\x02\x00\x00"
    assert decode_one(data, 3, to_server=False) == Connack(False, 0)


@pytest.mark.parametrize("cls", sorted(p.CLASSES.values(), key=lambda cls: cls.TYPE) + [Will],
                         ids=lambda cls: cls.__name__)
def test_packets_compare_every_field(cls):
    """Equality (which every round trip relies on) and repr cover the fields of the class and its bases."""
    fields = {
        p.Connect: dict(protocol_level=4, client_id="c"), p.Connack: {}, Publish: dict(topic="t", payload=b""),
        p.Puback: dict(packet_id=1), p.Pubrec: dict(packet_id=1), p.Pubrel: dict(packet_id=1),
        p.Pubcomp: dict(packet_id=1), Subscribe: dict(packet_id=1, subscriptions=[]),
        p.Suback: dict(packet_id=1, reason_codes=[]), p.Unsubscribe: dict(packet_id=1, topic_filters=[]),
        p.Unsuback: dict(packet_id=1), p.Pingreq: {}, p.Pingresp: {}, p.Disconnect: {}, p.Auth: {},
        Will: dict(topic="t", payload=b""),
    }[cls]
    packet = cls(**fields)
    assert packet == cls(**fields)
    for name in packet._fields:
        other = cls(**fields)
        setattr(other, name, ("changed", name))
        assert other != packet, name
        assert "%s=" % name in repr(packet)
