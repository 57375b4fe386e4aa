"""Builders and hypothesis strategies shared by the MQTT codec tests.

``raw_packet``/``raw_string`` write wire bytes by hand (for inputs the
encoder would never produce); ``decode_one`` reads a packet through a
decoder of the right side that has already seen the connection's first
packet; ``packets(ptype, level, to_server)`` draws any valid packet of a
type, with properties and reason codes at level 5.
"""

from __future__ import annotations

from hypothesis import strategies as st

from flowmq.mqtt.codec import Connack, Connect, Decoder, encode
from flowmq.mqtt.codec import packets as p
from flowmq.mqtt.codec.primitives import (MAX_VARINT, encode_varint, read_binary, read_byte, read_string,
                                          read_string_pair, read_u16, read_u32, read_varint)
from flowmq.mqtt.codec.properties import PROPERTIES, WILL_PROPERTIES
from flowmq.mqtt.codec.reasons import ALLOWED, CONNACK_RETURN_CODES, SUBACK_RETURN_CODES

FROM_CLIENT = (p.CONNECT, p.PUBLISH, p.PUBACK, p.PUBREC, p.PUBREL, p.PUBCOMP, p.SUBSCRIBE, p.UNSUBSCRIBE,
               p.PINGREQ, p.DISCONNECT, p.AUTH)
FROM_SERVER = (p.CONNACK, p.PUBLISH, p.PUBACK, p.PUBREC, p.PUBREL, p.PUBCOMP, p.SUBACK, p.UNSUBACK, p.PINGRESP,
               p.DISCONNECT, p.AUTH)


def raw_packet(first: int, body: bytes) -> bytes:
    """A packet with the Remaining Length written for ``body``."""
    return bytes((first,)) + encode_varint(len(body)) + body


def raw_string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def connect_bytes(level: int, client_id: str = "c") -> bytes:
    return encode(Connect(level, client_id), level)


def server_decoder(level: int, **limits) -> Decoder:
    """A server-side decoder that has read a CONNECT at ``level``."""
    decoder = Decoder(**limits)
    decoder.feed(connect_bytes(level))
    return decoder


def client_decoder(level: int) -> Decoder:
    """A client-side decoder that has read its CONNACK."""
    decoder = Decoder.for_client(level)
    decoder.feed(encode(Connack(), level))
    return decoder


def decode_one(data: bytes, level: int, to_server: bool = True):
    """Decode the one packet in ``data`` as the given side would."""
    if to_server and data[0] >> 4 == p.CONNECT:
        decoder = Decoder()
    elif not to_server and data[0] >> 4 == p.CONNACK:
        decoder = Decoder.for_client(level)
    else:
        decoder = server_decoder(level) if to_server else client_decoder(level)
    packets = decoder.feed(data)
    assert len(packets) == 1, packets
    return packets[0]


# -- strategies -------------------------------------------------------------

_TEXT_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
texts = st.text(_TEXT_CHARS, max_size=12)
topic_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"),
                      min_size=1, max_size=12)
topic_filters = texts  # the decoder checks a filter's UTF-8 only
binaries = st.binary(max_size=24)
packet_ids = st.integers(1, 65535)

_BY_TYPE = {
    read_byte: st.integers(0, 255),
    read_u16: st.integers(0, 65535),
    read_u32: st.integers(0, 2 ** 32 - 1),
    read_varint: st.integers(0, MAX_VARINT),
    read_string: texts,
    read_binary: binaries,
    read_string_pair: st.tuples(texts, texts),
}


def _value(prop):
    check = prop.check.__name__ if prop.check else None
    if check == "_zero_or_one":
        return st.integers(0, 1)
    if check == "_response_topic":
        return topic_names
    strategy = _BY_TYPE[prop.read]
    if check in ("_not_zero", "_topic_alias"):
        return strategy.filter(bool)
    return strategy


def properties(kind: int, to_server: bool = True):
    """Any valid property block of packet type ``kind`` (or WILL_PROPERTIES)."""
    optional = {}
    for prop in PROPERTIES:
        if not prop.kinds & 1 << kind:
            continue
        if prop.name == "subscription_identifier":
            if kind == p.PUBLISH and to_server:
                continue  # MQTT-3.3.4-6
            optional[prop.name] = st.lists(_value(prop), min_size=1, max_size=1 if kind == p.SUBSCRIBE else 3)
        elif prop.name == "user_property":
            optional[prop.name] = st.lists(_value(prop), min_size=1, max_size=3)
        else:
            optional[prop.name] = _value(prop)
    drawn = st.fixed_dictionaries({}, optional=optional)
    if kind == p.CONNECT:
        drawn = drawn.filter(lambda props: "authentication_data" not in props or "authentication_method" in props)
    return drawn


def _props(kind, level, to_server=True):
    return properties(kind, to_server) if level == 5 else st.just(p.NO_PROPERTIES)


def _code(ptype, level):
    return st.sampled_from(sorted(ALLOWED[ptype])) if level == 5 else st.just(0)


@st.composite
def _connect(draw, level):
    username = draw(st.none() | texts)
    password = draw(st.none() | binaries) if username is not None or level == 5 else None
    will = None
    if draw(st.booleans()):
        will = p.Will(draw(topic_names), draw(binaries), draw(st.integers(0, 2)), draw(st.booleans()),
                      draw(_props(WILL_PROPERTIES, level)))
    return p.Connect(level, draw(texts), draw(st.booleans()), draw(st.integers(0, 65535)), username, password,
                     will, draw(_props(p.CONNECT, level)))


@st.composite
def _connack(draw, level, accepted=False):
    """A CONNACK; ``accepted``: one that lets the connection go on (code 0)."""
    code = 0 if accepted else draw(st.sampled_from(sorted(ALLOWED[p.CONNACK])) if level == 5 else st.sampled_from(
        sorted(CONNACK_RETURN_CODES)))
    return p.Connack(draw(st.booleans()) and not code, code, draw(_props(p.CONNACK, level)))


@st.composite
def _publish(draw, level, to_server):
    qos = draw(st.integers(0, 2))
    props = draw(_props(p.PUBLISH, level, to_server))
    topic = draw(topic_names)
    if level == 5 and "topic_alias" in props and draw(st.booleans()):
        topic = ""  # the alias stands for it (5.0 §3.3.2.3.4)
    return p.Publish(topic, draw(st.binary(max_size=64)), qos, draw(st.booleans()), qos > 0 and draw(st.booleans()),
                     draw(packet_ids) if qos else None, props)


@st.composite
def _subscribe(draw, level):
    subscriptions = []
    for topic_filter in draw(st.lists(topic_filters, min_size=1, max_size=4)):
        qos = draw(st.integers(0, 2))
        if level == 5:
            no_local = draw(st.booleans()) and not topic_filter.startswith("$share/")
            options = p.SubscriptionOptions(qos, no_local, draw(st.booleans()), draw(st.integers(0, 2)))
        else:
            options = p.SubscriptionOptions(qos)
        subscriptions.append((topic_filter, options))
    return p.Subscribe(draw(packet_ids), subscriptions, draw(_props(p.SUBSCRIBE, level)))


def packets(ptype: int, level: int, to_server: bool = True):
    """Any valid packet of type ``ptype`` at ``level`` (3, 4 or 5), as ``to_server``'s side receives it."""
    if ptype == p.CONNECT:
        return _connect(level)
    if ptype == p.CONNACK:
        return _connack(level)
    if ptype == p.PUBLISH:
        return _publish(level, to_server)
    if ptype in (p.PUBACK, p.PUBREC, p.PUBREL, p.PUBCOMP):
        return st.builds(p.CLASSES[ptype], packet_ids, _code(ptype, level), _props(ptype, level))
    if ptype == p.SUBSCRIBE:
        return _subscribe(level)
    if ptype == p.SUBACK:
        codes = st.sampled_from(sorted(ALLOWED[p.SUBACK] if level == 5 else SUBACK_RETURN_CODES))
        return st.builds(p.Suback, packet_ids, st.lists(codes, min_size=1, max_size=4), _props(p.SUBACK, level))
    if ptype == p.UNSUBSCRIBE:
        return st.builds(p.Unsubscribe, packet_ids, st.lists(topic_filters, min_size=1, max_size=4),
                         _props(p.UNSUBSCRIBE, level))
    if ptype == p.UNSUBACK:
        codes = st.lists(st.sampled_from(sorted(ALLOWED[p.UNSUBACK])), min_size=1, max_size=4) if level == 5 \
            else st.just([])
        return st.builds(p.Unsuback, packet_ids, codes, _props(p.UNSUBACK, level))
    if ptype == p.PINGREQ:
        return st.just(p.Pingreq())
    if ptype == p.PINGRESP:
        return st.just(p.Pingresp())
    if ptype in (p.DISCONNECT, p.AUTH):
        return st.builds(p.CLASSES[ptype], _code(ptype, level), _props(ptype, level))
    raise ValueError(ptype)


def session(level: int, to_server: bool = True, max_size: int = 12):
    """A connection's worth of packets: its first packet, then any others of that side."""
    first = _connect(level) if to_server else _connack(level, accepted=True)  # drawn, not filtered: most codes refuse
    kinds = [ptype for ptype in (FROM_CLIENT if to_server else FROM_SERVER)
             if ptype not in (p.CONNECT, p.CONNACK) and (ptype != p.AUTH or level == 5)]
    rest = st.lists(st.sampled_from(kinds).flatmap(lambda ptype: packets(ptype, level, to_server)),
                    max_size=max_size)
    return st.tuples(first, rest).map(lambda pair: [pair[0]] + pair[1])
