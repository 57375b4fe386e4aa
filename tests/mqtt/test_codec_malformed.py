"""Bad input, byte by byte: each case names the rule it breaks and asserts
the exact exception class and MQTT 5 reason code the decoder reports (and,
for a CONNECT, whether and how a CONNACK may answer it)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_helpers import client_decoder, raw_packet, raw_string, server_decoder, session
from flowmq.mqtt.codec import (CodecError, Connect, Decoder, MalformedPacket, ProtocolError, TopicAliasInvalid,
                               TopicNameInvalid, UnsupportedProtocolVersion, encode, encode_publish)
from flowmq.mqtt.codec.primitives import encode_varint


def props(raw: bytes) -> bytes:
    """An MQTT 5 property block around ``raw``."""
    return encode_varint(len(raw)) + raw


def publish5(raw_props: bytes, topic: bytes = b"a/b", first: int = 0x30, extra: bytes = b"") -> bytes:
    return raw_packet(first, raw_string(topic) + extra + props(raw_props) + b"payload")


def subscribe(options: int, topic_filter: bytes = b"a/b", raw_props=None) -> bytes:
    middle = b"" if raw_props is None else props(raw_props)
    return raw_packet(0x82, b"\x00\x01" + middle + raw_string(topic_filter) + bytes((options,)))


# (name, level of the CONNECT read first, bytes, exception, reason code)
AFTER_CONNECT = [
    ("PUBACK with reserved flags set", 4, raw_packet(0x41, b"\x00\x01"), MalformedPacket, 0x81),
    ("PUBREL without its 0b0010 flags", 5, raw_packet(0x60, b"\x00\x01"), MalformedPacket, 0x81),
    ("SUBSCRIBE without its 0b0010 flags", 4, raw_packet(0x80, b"\x00\x01" + raw_string(b"a") + b"\x00"),
     MalformedPacket, 0x81),
    ("UNSUBSCRIBE without its 0b0010 flags", 4, raw_packet(0xA0, b"\x00\x01" + raw_string(b"a")),
     MalformedPacket, 0x81),
    ("PINGREQ with flags", 4, b"\xc1\x00", MalformedPacket, 0x81),
    ("DISCONNECT with flags", 5, b"\xe2\x00", MalformedPacket, 0x81),
    ("PUBLISH with QoS 3", 4, raw_packet(0x36, raw_string(b"a") + b"\x00\x01"), MalformedPacket, 0x81),
    ("DUP on a QoS 0 PUBLISH", 4, raw_packet(0x38, raw_string(b"a")), MalformedPacket, 0x81),
    ("Remaining Length with a fifth byte", 4, b"\x30\xff\xff\xff\xff\x01", MalformedPacket, 0x81),
    ("topic name longer than the packet", 4, raw_packet(0x30, b"\x00\x05ab"), MalformedPacket, 0x81),
    ("topic length cut short", 4, raw_packet(0x30, b"\x00"), MalformedPacket, 0x81),
    ("packet identifier cut short", 4, raw_packet(0x32, raw_string(b"a") + b"\x00"), MalformedPacket, 0x81),
    ("ill-formed UTF-8 topic", 4, raw_packet(0x30, raw_string(b"\xc3\x28")), MalformedPacket, 0x81),
    ("UTF-16 surrogate in topic", 4, raw_packet(0x30, raw_string(b"a\xed\xa0\x80")), MalformedPacket, 0x81),
    ("overlong encoding of U+0000", 4, raw_packet(0x30, raw_string(b"\xc0\x80")), MalformedPacket, 0x81),
    ("U+0000 in topic", 5, raw_packet(0x30, raw_string(b"a\x00b") + b"\x00"), MalformedPacket, 0x81),
    ("U+0000 in topic filter", 4, subscribe(0, b"a\x00"), MalformedPacket, 0x81),
    ("'+' in PUBLISH topic", 4, raw_packet(0x30, raw_string(b"a/+")), TopicNameInvalid, 0x90),
    ("'#' in PUBLISH topic", 5, publish5(b"", b"a/#"), TopicNameInvalid, 0x90),
    ("empty topic (3.1.1)", 4, raw_packet(0x30, raw_string(b"")), ProtocolError, 0x82),
    ("empty topic without Topic Alias", 5, publish5(b"", b""), ProtocolError, 0x82),
    ("packet identifier 0 on QoS 1", 4, raw_packet(0x32, raw_string(b"a") + b"\x00\x00"), MalformedPacket, 0x81),
    ("packet identifier 0 in SUBSCRIBE", 4, raw_packet(0x82, b"\x00\x00" + raw_string(b"a") + b"\x00"),
     MalformedPacket, 0x81),
    ("packet identifier 0 in PUBACK", 5, raw_packet(0x40, b"\x00\x00"), MalformedPacket, 0x81),
    ("SUBSCRIBE without filters (3.1.1)", 4, raw_packet(0x82, b"\x00\x01"), ProtocolError, 0x82),
    ("SUBSCRIBE without filters", 5, raw_packet(0x82, b"\x00\x01\x00"), ProtocolError, 0x82),
    ("UNSUBSCRIBE without filters", 4, raw_packet(0xA2, b"\x00\x01"), ProtocolError, 0x82),
    ("topic filter without its options byte", 4, raw_packet(0x82, b"\x00\x01" + raw_string(b"a")),
     MalformedPacket, 0x81),
    ("3.1.1 requested QoS with reserved bits", 4, subscribe(0x04), MalformedPacket, 0x81),
    ("3.1.1 requested QoS 3", 4, subscribe(0x03), MalformedPacket, 0x81),
    ("subscription options reserved bits", 5, subscribe(0x40, raw_props=b""), MalformedPacket, 0x81),
    ("subscription Maximum QoS 3", 5, subscribe(0x03, raw_props=b""), ProtocolError, 0x82),
    ("Retain Handling 3", 5, subscribe(0x30, raw_props=b""), ProtocolError, 0x82),
    ("No Local on a shared subscription", 5, subscribe(0x04, b"$share/g/a", raw_props=b""), ProtocolError, 0x82),
    ("UNSUBSCRIBE filter cut short", 4, raw_packet(0xA2, b"\x00\x01" + raw_string(b"a") + b"\x00"),
     MalformedPacket, 0x81),
    ("property repeated", 5, publish5(b"\x02\x00\x00\x00\x01" * 2), ProtocolError, 0x82),
    ("Subscription Identifier twice in SUBSCRIBE", 5, subscribe(0, raw_props=b"\x0b\x01\x0b\x02"),
     ProtocolError, 0x82),
    ("Session Expiry Interval in PUBLISH", 5, publish5(b"\x11\x00\x00\x00\x01"), MalformedPacket, 0x81),
    ("unknown property identifier", 5, publish5(b"\x05\x00"), MalformedPacket, 0x81),
    ("multi-byte property identifier", 5, publish5(b"\x81\x01\x00"), MalformedPacket, 0x81),
    ("property length past the packet", 5, raw_packet(0x30, raw_string(b"a") + b"\x05\x01"),
     MalformedPacket, 0x81),
    ("property value past its block", 5, raw_packet(0x30, raw_string(b"a") + b"\x03\x02\x00\x00\x00\x00"),
     MalformedPacket, 0x81),
    ("Topic Alias 0", 5, publish5(b"\x23\x00\x00"), TopicAliasInvalid, 0x94),
    ("Subscription Identifier 0", 5, subscribe(0, raw_props=b"\x0b\x00"), ProtocolError, 0x82),
    ("Subscription Identifier from a client", 5, publish5(b"\x0b\x01"), ProtocolError, 0x82),
    ("Payload Format Indicator 2", 5, publish5(b"\x01\x02"), ProtocolError, 0x82),
    ("Response Topic with a wildcard", 5, publish5(b"\x08" + raw_string(b"r/#")), ProtocolError, 0x82),
    ("User Property with ill-formed UTF-8", 5, publish5(b"\x26" + raw_string(b"\xff") + raw_string(b"v")),
     MalformedPacket, 0x81),
    ("PUBACK reason code not a PUBACK one", 5, raw_packet(0x40, b"\x00\x01\x92"), ProtocolError, 0x82),
    ("DISCONNECT reason code not a DISCONNECT one", 5, raw_packet(0xE0, b"\x92"), ProtocolError, 0x82),
    ("3.1.1 PUBACK longer than 2", 4, raw_packet(0x40, b"\x00\x01\x00"), MalformedPacket, 0x81),
    ("3.1.1 DISCONNECT with a body", 4, raw_packet(0xE0, b"\x00"), MalformedPacket, 0x81),
    ("PINGREQ with a body", 5, raw_packet(0xC0, b"\x00"), MalformedPacket, 0x81),
    ("reserved packet type 0", 4, b"\x00\x00", MalformedPacket, 0x81),
    ("AUTH at 3.1.1", 4, b"\xf0\x00", MalformedPacket, 0x81),
    ("second CONNECT", 4, encode(Connect(4, "again"), 4), ProtocolError, 0x82),
    ("CONNACK sent to a server", 4, b"\x20\x02\x00\x00", ProtocolError, 0x82),
    ("SUBACK sent to a server", 5, raw_packet(0x90, b"\x00\x01\x00\x00"), ProtocolError, 0x82),
    ("PINGRESP sent to a server", 4, b"\xd0\x00", ProtocolError, 0x82),
]


@pytest.mark.parametrize("name, level, data, error, code", AFTER_CONNECT, ids=[c[0] for c in AFTER_CONNECT])
def test_bad_packet_after_connect(name, level, data, error, code):
    decoder = server_decoder(level)
    with pytest.raises(error) as caught:
        decoder.feed(data)
    assert type(caught.value) is error
    assert caught.value.reason_code == code
    assert caught.value.connack_level is None  # not in a CONNECT: DISCONNECT (v5) or close


def connect_raw(name: bytes = b"MQTT", level: int = 4, flags: int = 0x02, raw_props=None, payload: bytes = None,
                first: int = 0x10) -> bytes:
    if raw_props is None and level == 5:
        raw_props = b""
    middle = b"" if raw_props is None else props(raw_props)
    if payload is None:
        payload = raw_string(b"client")
    return raw_packet(first, raw_string(name) + bytes((level, flags)) + b"\x00\x3c" + middle + payload)


WILL4 = raw_string(b"client") + raw_string(b"will/topic") + raw_string(b"bye")
WILL5 = raw_string(b"client") + props(b"") + raw_string(b"will/topic") + raw_string(b"bye")

# (name, bytes, exception, reason code, connack_level, connack_code)
CONNECTS = [
    ("first packet is not CONNECT", encode_publish(b"a", b"x"), ProtocolError, 0x82, None, None),
    ("protocol name not MQTT", connect_raw(b"MQTX"), ProtocolError, 0x82, None, None),
    ("protocol level 6", connect_raw(level=6), UnsupportedProtocolVersion, 0x84, 4, 0x01),
    ("MQTT at level 3", connect_raw(level=3), UnsupportedProtocolVersion, 0x84, 4, 0x01),
    ("MQIsdp at level 4", connect_raw(b"MQIsdp", 4), UnsupportedProtocolVersion, 0x84, 4, 0x01),
    ("CONNECT fixed-header flags", connect_raw(first=0x12), MalformedPacket, 0x81, None, None),
    ("reserved connect flag (3.1.1)", connect_raw(flags=0x03), MalformedPacket, 0x81, None, None),
    ("reserved connect flag (5)", connect_raw(level=5, flags=0x03), MalformedPacket, 0x81, 5, 0x81),
    ("Will QoS without Will Flag", connect_raw(flags=0x0A), MalformedPacket, 0x81, None, None),
    ("Will Retain without Will Flag", connect_raw(level=5, flags=0x22), MalformedPacket, 0x81, 5, 0x81),
    ("Will QoS 3", connect_raw(flags=0x1E, payload=WILL4), MalformedPacket, 0x81, None, None),
    ("Password without User Name (3.1.1)", connect_raw(flags=0x42, payload=raw_string(b"c") + raw_string(b"pw")),
     MalformedPacket, 0x81, None, None),
    ("client identifier cut short", connect_raw(payload=b"\x00\x09abc"), MalformedPacket, 0x81, None, None),
    ("U+0000 in client identifier", connect_raw(level=5, payload=raw_string(b"a\x00")), MalformedPacket, 0x81,
     5, 0x81),
    ("bytes after the CONNECT payload", connect_raw(payload=raw_string(b"c") + b"\x00"), MalformedPacket, 0x81,
     None, None),
    ("Will Topic with a wildcard", connect_raw(level=5, flags=0x06, payload=raw_string(b"c") + props(b"")
                                               + raw_string(b"w/+") + raw_string(b"x")),
     TopicNameInvalid, 0x90, 5, 0x90),
    ("Receive Maximum 0", connect_raw(level=5, raw_props=b"\x21\x00\x00"), ProtocolError, 0x82, 5, 0x82),
    ("Maximum Packet Size 0", connect_raw(level=5, raw_props=b"\x27\x00\x00\x00\x00"), ProtocolError, 0x82,
     5, 0x82),
    ("Authentication Data without Method", connect_raw(level=5, raw_props=b"\x16" + raw_string(b"x")),
     ProtocolError, 0x82, 5, 0x82),
    ("Request Problem Information 2", connect_raw(level=5, raw_props=b"\x17\x02"), ProtocolError, 0x82, 5, 0x82),
    ("Session Expiry Interval twice", connect_raw(level=5, raw_props=b"\x11\x00\x00\x00\x01" * 2),
     ProtocolError, 0x82, 5, 0x82),
    ("Topic Alias in Will Properties", connect_raw(level=5, flags=0x06, payload=raw_string(b"c")
                                                   + props(b"\x23\x00\x01") + raw_string(b"w") + raw_string(b"x")),
     MalformedPacket, 0x81, 5, 0x81),
]


@pytest.mark.parametrize("name, data, error, code, connack_level, connack_code", CONNECTS,
                         ids=[c[0] for c in CONNECTS])
def test_bad_connect(name, data, error, code, connack_level, connack_code):
    with pytest.raises(error) as caught:
        Decoder().feed(data)
    assert type(caught.value) is error
    assert caught.value.reason_code == code
    assert caught.value.connack_level == connack_level
    if connack_level is not None:
        assert caught.value.connack_code == connack_code


@pytest.mark.parametrize("flags, payload", [(0xC6, WILL5 + raw_string(b"user") + raw_string(b"pw")),
                                            (0x42, raw_string(b"c") + raw_string(b"pw"))],
                         ids=["everything", "password without user name"])
def test_good_v5_connects(flags, payload):
    """The same checks let valid CONNECTs through (v5 allows a password alone, 5.0 §3.1.2.9)."""
    (packet,) = Decoder().feed(connect_raw(level=5, flags=flags, payload=payload))
    assert packet.protocol_level == 5
    assert packet.password == b"pw"


# (name, level, bytes after the first CONNACK, exception, reason code); a client decoder reads them.
TO_CLIENT = [
    ("CONNACK reserved flags", 4, b"\x20\x02\x02\x00", MalformedPacket, 0x81),
    ("CONNACK return code 6", 4, b"\x20\x02\x00\x06", ProtocolError, 0x82),
    ("CONNACK reason code not a CONNACK one", 5, b"\x20\x03\x00\x10\x00", ProtocolError, 0x82),
    ("Session Present with a refusal", 4, b"\x20\x02\x01\x05", ProtocolError, 0x82),
    ("SUBACK without reason codes", 4, raw_packet(0x90, b"\x00\x01"), ProtocolError, 0x82),
    ("3.1.1 SUBACK code 3", 4, raw_packet(0x90, b"\x00\x01\x03"), ProtocolError, 0x82),
    ("3.1.1 UNSUBACK with a reason code", 4, raw_packet(0xB0, b"\x00\x01\x00"), MalformedPacket, 0x81),
    ("UNSUBACK reason code not an UNSUBACK one", 5, raw_packet(0xB0, b"\x00\x01\x00\x02"), ProtocolError, 0x82),
    ("PINGREQ sent to a client", 4, b"\xc0\x00", ProtocolError, 0x82),
]


@pytest.mark.parametrize("name, level, data, error, code", TO_CLIENT, ids=[c[0] for c in TO_CLIENT])
def test_bad_packet_to_a_client(name, level, data, error, code):
    if data[0] >> 4 == 2:
        decoder = Decoder.for_client(level)
    else:
        decoder = client_decoder(level)
    with pytest.raises(error) as caught:
        decoder.feed(data)
    assert type(caught.value) is error
    assert caught.value.reason_code == code


@pytest.mark.parametrize("to_server", [True, False], ids=["client-to-server", "server-to-client"])
@pytest.mark.parametrize("level", [3, 4, 5])
@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_any_bytes_give_packets_or_a_codec_error(level, to_server, data):
    """Bad input never escapes as another exception: random bytes, and valid
    streams with a few bytes changed, from the connection's first packet or
    after it, decode or raise a CodecError."""
    fresh = data.draw(st.booleans())  # the first packet (CONNECT, CONNACK) in the stream too
    if data.draw(st.booleans()):
        stream = data.draw(st.binary(max_size=200))
    else:
        sent = data.draw(session(level, to_server, 6))[0 if fresh else 1:]
        mutable = bytearray(b"".join(encode(packet, level) for packet in sent) or b"\x00")
        for index, value in data.draw(st.lists(st.tuples(st.integers(0, len(mutable) - 1), st.integers(0, 255)),
                                               max_size=4)):
            mutable[index] = value
        stream = bytes(mutable)
    if fresh:
        decoder = Decoder() if to_server else Decoder.for_client(level)
    else:
        decoder = server_decoder(level) if to_server else client_decoder(level)
    try:
        decoder.feed(stream)
    except CodecError as error:
        assert 0x81 <= error.reason_code <= 0x95
