"""The streaming decoder: however the bytes are cut into ``feed()`` calls, the
same packets come out, in order; limits apply from the fixed header; an
error reports the packets before it and ends the stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec_helpers import client_decoder, connect_bytes, raw_packet, server_decoder, session
from flowmq.mqtt.codec import (Connect, Decoder, MalformedPacket, PacketTooLarge, ProtocolError, Publish, encode,
                               encode_publish)
from flowmq.mqtt.codec.primitives import encode_varint


def _feed_pieces(decoder, data, cuts):
    out = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        out += decoder.feed(data[start:cut])
        start = cut
    return out


def _decoder_for(level, to_server):
    return Decoder() if to_server else Decoder.for_client(level)


@pytest.mark.parametrize("level, to_server", [(3, True), (4, True), (4, False), (5, True), (5, False)],
                         ids=["v3-client-to-server", "v4-client-to-server", "v4-server-to-client",
                              "v5-client-to-server", "v5-server-to-client"])
@settings(deadline=None, max_examples=60)
@given(data=st.data())
def test_any_split_of_a_stream_gives_the_same_packets(level, to_server, data):
    sent = data.draw(session(level, to_server))
    stream = b"".join(encode(packet, level) for packet in sent)
    whole = _decoder_for(level, to_server).feed(stream)
    byte_by_byte = []
    decoder = _decoder_for(level, to_server)
    for index in range(len(stream)):
        byte_by_byte += decoder.feed(stream[index:index + 1])
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    split = _feed_pieces(_decoder_for(level, to_server), stream, cuts)
    assert whole == sent
    assert byte_by_byte == sent
    assert split == sent


def test_a_hundred_publishes_in_one_feed_come_out_in_order():
    decoder = server_decoder(4)
    stream = b"".join(encode_publish(b"t/%d" % i, b"payload %d" % i, i % 3, False, False, i + 1 if i % 3 else None)
                      for i in range(100))
    out = decoder.feed(stream)
    assert [(packet.topic, packet.payload, packet.qos) for packet in out] == \
        [("t/%d" % i, b"payload %d" % i, i % 3) for i in range(100)]


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("chunk", [1000, 4095, 65536])
def test_a_large_payload_over_many_reads(level, chunk):
    payload = bytes(range(256)) * 3000  # 768,000 bytes
    props = {"user_property": [("k", "v")], "correlation_data": b"c" * 5000} if level == 5 else {}
    packet = Publish("big/" + "x" * 3000, payload, 1, packet_id=42, properties=props)
    data = encode(packet, level) + encode(Publish("after", b"1"), level)
    decoder = server_decoder(level)
    out = []
    for start in range(0, len(data), chunk):
        out += decoder.feed(data[start:start + chunk])
    assert out == [packet, Publish("after", b"1")]
    assert type(out[0].payload) is bytes


def test_a_publish_that_starts_mid_read_and_spans_reads():
    decoder = server_decoder(4)
    big = encode(Publish("a/b", b"z" * 100000), 4)
    small = encode(Publish("s", b"1"), 4)
    data = small + big + small
    out = decoder.feed(data[:50]) + decoder.feed(data[50:70000]) + decoder.feed(data[70000:])
    assert [packet.topic for packet in out] == ["s", "a/b", "s"]
    assert out[1].payload == b"z" * 100000


@pytest.mark.parametrize("level", [4, 5])
def test_a_publish_that_starts_mid_read_is_whole_wherever_the_next_read_begins(level):
    props = {"user_property": [("k", "v")]} if level == 5 else {}
    packet = Publish("a/b", bytes(range(256)) + b"tail", 1, packet_id=7, properties=props)
    before, after = Publish("s", b"1"), Publish("t", b"2")
    data = encode(before, level) + encode(packet, level) + encode(after, level)
    start = len(encode(before, level))
    in_after_header = len(data) - len(encode(after, level)) + 1  # the next packet's fixed header cut short too
    for cut in range(start + 1, start + len(encode(packet, level))):
        for cuts in ([cut], [cut, cut + 1], [cut, in_after_header]):
            out = _feed_pieces(server_decoder(level), data, cuts)
            assert out == [before, packet, after], cuts
            assert type(out[1].payload) is bytes


def test_partial_fixed_header_waits():
    decoder = server_decoder(4)
    data = encode(Publish("a", b"x" * 300), 4)  # two-byte Remaining Length
    assert decoder.feed(data[:1]) == []
    assert decoder.feed(data[1:2]) == []
    assert decoder.feed(data[2:3]) == []
    assert decoder.feed(data[3:]) == [Publish("a", b"x" * 300)]


def test_oversize_packet_refused_from_its_header_before_connect():
    decoder = Decoder(max_packet_size=1 << 20, max_connect_size=1000)
    with pytest.raises(PacketTooLarge) as caught:
        decoder.feed(b"\x10" + encode_varint(1001))  # the fixed header only, no body
    assert caught.value.reason_code == 0x95
    assert caught.value.connack_level is None


def test_oversize_packet_refused_from_its_header_after_connect():
    decoder = Decoder(max_packet_size=10000, max_connect_size=100)
    assert decoder.feed(connect_bytes(5)) == [Connect(5, "c")]
    assert decoder.feed(b"\x30" + encode_varint(10000 - 3)) == []  # 10,000 bytes in all: allowed
    decoder = Decoder(max_packet_size=10000, max_connect_size=100)
    decoder.feed(connect_bytes(5))
    with pytest.raises(PacketTooLarge):
        decoder.feed(b"\x30" + encode_varint(10000 - 2))  # 10,001 bytes


def test_the_limit_after_connect_applies_to_the_next_packet_in_the_same_feed():
    decoder = Decoder(max_packet_size=10000, max_connect_size=100)
    big = encode(Publish("t", b"x" * 5000), 4)
    assert decoder.feed(connect_bytes(4) + big) == [Connect(4, "c"), Publish("t", b"x" * 5000)]


def test_oversize_header_split_across_feeds_is_refused_when_complete():
    decoder = Decoder(max_connect_size=1000)
    header = b"\x10" + encode_varint(100000)
    assert decoder.feed(header[:2]) == []
    with pytest.raises(PacketTooLarge):
        decoder.feed(header[2:])


def test_error_reports_the_packets_before_it_and_the_stream_stays_failed():
    decoder = server_decoder(4)
    good = encode(Publish("a", b"1"), 4)
    with pytest.raises(MalformedPacket) as caught:
        decoder.feed(good + good + b"\x30\x03\x00\x05a")  # the third has no room for its topic
    assert caught.value.packets == [Publish("a", b"1"), Publish("a", b"1")]
    with pytest.raises(MalformedPacket) as again:
        decoder.feed(good)
    assert again.value.packets == []


def test_first_packet_is_checked_from_its_first_byte():
    with pytest.raises(ProtocolError) as caught:
        Decoder().feed(b"\x30")
    assert "CONNECT" in caught.value.reason


def test_client_side_first_packet_is_connack_or_v5_auth():
    with pytest.raises(ProtocolError):
        Decoder.for_client(4).feed(encode(Publish("a", b""), 4))
    decoder = Decoder.for_client(5)
    assert len(decoder.feed(b"\xf0\x00" + b"\x20\x03\x00\x00\x00" + raw_packet(0x30, b"\x00\x01a\x00"))) == 3


def test_client_side_refuses_a_second_connack_and_client_packets():
    decoder = client_decoder(4)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x20\x02\x00\x00")
    with pytest.raises(ProtocolError):
        client_decoder(4).feed(b"\x82\x06\x00\x01\x00\x01a\x00")  # a SUBSCRIBE sent to a client
