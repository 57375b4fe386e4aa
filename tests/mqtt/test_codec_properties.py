"""MQTT 5 properties: the 27 of Table 2-4 with their types and packets, and
the property block's rules (valid packets, repeats, forbidden values)."""

from __future__ import annotations

import pytest

from codec_helpers import decode_one
from flowmq.mqtt.codec import (MalformedPacket, ProtocolError, TopicAliasInvalid, encode_property_list,
                               encode_publish, property_block)
from flowmq.mqtt.codec import packets as p
from flowmq.mqtt.codec.primitives import encode_varint, read_binary, read_byte, read_string, read_string_pair, \
    read_u16, read_u32, read_varint
from flowmq.mqtt.codec.properties import (BY_IDENTIFIER, NAMES, PROPERTIES, WILL_PROPERTIES, decode_properties,
                                          encode_properties)

# 5.0 Table 2-4: identifier, name, data type.
TABLE_2_4 = [
    (0x01, "payload_format_indicator", read_byte), (0x02, "message_expiry_interval", read_u32),
    (0x03, "content_type", read_string), (0x08, "response_topic", read_string),
    (0x09, "correlation_data", read_binary), (0x0B, "subscription_identifier", read_varint),
    (0x11, "session_expiry_interval", read_u32), (0x12, "assigned_client_identifier", read_string),
    (0x13, "server_keep_alive", read_u16), (0x15, "authentication_method", read_string),
    (0x16, "authentication_data", read_binary), (0x17, "request_problem_information", read_byte),
    (0x18, "will_delay_interval", read_u32), (0x19, "request_response_information", read_byte),
    (0x1A, "response_information", read_string), (0x1C, "server_reference", read_string),
    (0x1F, "reason_string", read_string), (0x21, "receive_maximum", read_u16),
    (0x22, "topic_alias_maximum", read_u16), (0x23, "topic_alias", read_u16),
    (0x24, "maximum_qos", read_byte), (0x25, "retain_available", read_byte),
    (0x26, "user_property", read_string_pair), (0x27, "maximum_packet_size", read_u32),
    (0x28, "wildcard_subscription_available", read_byte), (0x29, "subscription_identifier_available", read_byte),
    (0x2A, "shared_subscription_available", read_byte),
]
KINDS = [WILL_PROPERTIES, p.CONNECT, p.CONNACK, p.PUBLISH, p.PUBACK, p.PUBREC, p.PUBREL, p.PUBCOMP, p.SUBSCRIBE,
         p.SUBACK, p.UNSUBSCRIBE, p.UNSUBACK, p.DISCONNECT, p.AUTH]
SAMPLE = {
    read_byte: 1, read_u16: 7, read_u32: 70000, read_varint: 300, read_string: "text/€",
    read_binary: b"\x00\xff", read_string_pair: ("name", "value"),
}


def test_all_27_properties_with_their_types():
    assert [(prop.identifier, prop.name, prop.read) for prop in PROPERTIES] == TABLE_2_4
    assert len(NAMES) == 27


def _block(prop, value) -> bytes:
    return encode_properties({prop.name: [value] if prop.is_list else value}, next(
        kind for kind in KINDS if prop.kinds & 1 << kind))


@pytest.mark.parametrize("identifier, kind", [(prop.identifier, kind) for prop in PROPERTIES for kind in KINDS])
def test_property_valid_only_in_its_packets(identifier, kind):
    prop = BY_IDENTIFIER[identifier]
    value = "r/t" if prop.name == "response_topic" else SAMPLE[prop.read]
    raw = _block(prop, value)
    if prop.kinds & 1 << kind:
        found, end = decode_properties(raw, 0, len(raw), kind)
        assert found == {prop.name: [value] if prop.is_list else value}
        assert end == len(raw)
        assert encode_properties(found, kind) == raw
    else:
        with pytest.raises(MalformedPacket):  # 5.0 §2.2.2.2
            decode_properties(raw, 0, len(raw), kind)
        with pytest.raises(ValueError):
            encode_properties({prop.name: value}, kind)


@pytest.mark.parametrize("identifier", [prop.identifier for prop in PROPERTIES])
def test_repeats(identifier):
    """Only User Property, and Subscription Identifier in a PUBLISH, may appear more than once."""
    prop = BY_IDENTIFIER[identifier]
    value = "r/t" if prop.name == "response_topic" else SAMPLE[prop.read]
    one = _block(prop, value)[1:]
    for kind in KINDS:
        if not prop.kinds & 1 << kind:
            continue
        raw = encode_varint(2 * len(one)) + one * 2
        if prop.repeats & 1 << kind:
            assert decode_properties(raw, 0, len(raw), kind)[0] == {prop.name: [value, value]}
        else:
            with pytest.raises(ProtocolError):
                decode_properties(raw, 0, len(raw), kind)


@pytest.mark.parametrize("raw, kind, error", [
    (b"\x24\x02", p.CONNACK, ProtocolError),  # Maximum QoS: 0 or 1 (5.0 §3.2.2.3.4)
    (b"\x25\x02", p.CONNACK, ProtocolError),
    (b"\x28\x02", p.CONNACK, ProtocolError),
    (b"\x29\x02", p.CONNACK, ProtocolError),
    (b"\x2a\x02", p.CONNACK, ProtocolError),
    (b"\x17\x02", p.CONNECT, ProtocolError),
    (b"\x19\x02", p.CONNECT, ProtocolError),
    (b"\x01\x02", WILL_PROPERTIES, ProtocolError),
    (b"\x21\x00\x00", p.CONNACK, ProtocolError),  # Receive Maximum 0
    (b"\x27\x00\x00\x00\x00", p.CONNACK, ProtocolError),  # Maximum Packet Size 0
    (b"\x0b\x00", p.PUBLISH, ProtocolError),  # Subscription Identifier 0
    (b"\x23\x00\x00", p.PUBLISH, TopicAliasInvalid),  # Topic Alias 0
    (b"\x08\x00\x00", WILL_PROPERTIES, ProtocolError),  # an empty Response Topic
    (b"\x08\x00\x01+", p.PUBLISH, ProtocolError),  # MQTT-3.3.2-14
])
def test_forbidden_values(raw, kind, error):
    block = encode_varint(len(raw)) + raw
    with pytest.raises(error):
        decode_properties(block, 0, len(block), kind)


def test_empty_block_is_the_shared_empty_mapping():
    assert decode_properties(b"\x00", 0, 1, p.PUBLISH) == (p.NO_PROPERTIES, 1)
    assert decode_properties(b"\x00", 0, 1, p.PUBLISH)[0] is p.NO_PROPERTIES
    assert encode_properties({}, p.PUBLISH) == b"\x00"


def test_largest_subscription_identifier():
    raw = encode_properties({"subscription_identifier": [268435455]}, p.SUBSCRIBE)
    assert raw == b"\x05\x0b\xff\xff\xff\x7f"
    assert decode_properties(raw, 0, len(raw), p.SUBSCRIBE)[0] == {"subscription_identifier": [268435455]}


def test_unknown_name_on_encode():
    with pytest.raises(ValueError):
        encode_properties({"no_such_property": 1}, p.PUBLISH)


def test_fan_out_block_from_parts():
    """The message's properties written once, each subscriber's Subscription Identifiers added to them."""
    shared = encode_property_list({"content_type": "json", "user_property": [("a", "1")]}, p.PUBLISH)
    for ids in ([], [7], [7, 300]):
        extra = encode_property_list({"subscription_identifier": ids}, p.PUBLISH) if ids else b""
        data = encode_publish(b"t/1", b"{}", 1, False, False, 5, property_block(shared, extra))
        packet = decode_one(data, 5, to_server=False)
        expected = {"content_type": "json", "user_property": [("a", "1")]}
        if ids:
            expected["subscription_identifier"] = ids
        assert packet.properties == expected
        assert packet.payload == b"{}" and packet.packet_id == 5
