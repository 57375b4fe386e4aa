"""Reading each control packet's variable header and payload (5.0 §3; 3.1.1 §3).

Every reader takes ``(first, buf, pos, end, level)``: the fixed header's
first byte (its flags), the buffer, where the body starts and ends, and the
protocol level (3, 4 or 5: MQTT 5 fields are read only at level 5); it
returns the packet or raises a ``CodecError``, and a body that does not end
exactly at ``end`` is a Malformed Packet. The stream decoder (``decode.py``)
has already checked the fixed header: packet type, direction, order, size
and the reserved flags of every packet but PUBLISH, whose flags carry its
QoS, RETAIN and DUP and are checked here.

Rules that the spec words as MUSTs on the sender are enforced where the
bytes alone show the breach; the reason class follows the spec's wording
for the receiver ("is a Malformed Packet", "is a Protocol Error"), and where
the spec names none the comment says which was chosen.
"""

from __future__ import annotations

from .errors import CodecError, MalformedPacket, ProtocolError, TopicNameInvalid, UnsupportedProtocolVersion
from .packets import (AUTH, CONNACK, CONNECT, DISCONNECT, MQTT_3_1, MQTT_3_1_1, MQTT_5, NO_PROPERTIES, PINGREQ,
                      PINGREQ_PACKET, PINGRESP, PINGRESP_PACKET, PROTOCOL_NAMES, PUBACK, PUBCOMP, PUBLISH, PUBREC,
                      PUBREL, SUBACK, SUBSCRIBE, TYPE_NAMES, UNSUBACK, UNSUBSCRIBE, Auth, Connack, Connect,
                      Disconnect, Puback, Pubcomp, Publish, Pubrec, Pubrel, Suback, Subscribe, SubscriptionOptions,
                      Unsuback, Unsubscribe, Will)
from .properties import WILL_PROPERTIES, decode_properties
from .primitives import read_binary, read_byte, read_string, read_u16
from .reasons import ALLOWED, CONNACK_RETURN_CODES, SUBACK_RETURN_CODES
from .topics import SHARE_PREFIX, topic_name_error

_LEVELS_BY_NAME = {"MQTT": (MQTT_3_1_1, MQTT_5), PROTOCOL_NAMES[MQTT_3_1]: (MQTT_3_1,)}
_QOS_ONLY = tuple(SubscriptionOptions(qos) for qos in range(3))  # the 3.1/3.1.1 options, shared


def _packet_id(buf, pos: int, end: int, ptype: int):
    """The Packet Identifier; 0 is malformed in every packet that has one (MQTT-2.2.1-3, -2.2.1-4;
    3.1.1 MQTT-2.3.1-1), acknowledgements included: they echo one (MQTT-2.2.1-5, -2.2.1-6)."""
    if pos + 2 > end:
        raise MalformedPacket("%s without its packet identifier" % TYPE_NAMES[ptype])
    packet_id = buf[pos] << 8 | buf[pos + 1]
    if not packet_id:
        raise MalformedPacket("packet identifier 0 in %s (MQTT-2.2.1-3)" % TYPE_NAMES[ptype])
    return packet_id, pos + 2


def _finish(pos: int, end: int, ptype: int):
    if pos != end:
        raise MalformedPacket("%d bytes after the end of %s" % (end - pos, TYPE_NAMES[ptype]))


def _reason_error(code: int, ptype: int) -> ProtocolError:
    return ProtocolError("reason code 0x%02X not valid in %s" % (code, TYPE_NAMES[ptype]))


def _check_reason(code: int, ptype: int):
    if code not in ALLOWED[ptype]:
        raise _reason_error(code, ptype)


def _check_reasons(codes, ptype: int, allowed):
    """A SUBACK's or UNSUBACK's list, checked at C speed."""
    bad = set(codes).difference(allowed)
    if bad:
        raise _reason_error(min(bad), ptype)


def decode_connect(buf, pos: int, end: int) -> Connect:
    """CONNECT (5.0 §3.1): the protocol level comes from the packet itself.

    A name other than "MQTT"/"MQIsdp" is not MQTT: a Protocol Error with no
    CONNACK (MQTT-3.1.2-1 lets the server close; it does not reveal itself).
    A known name with another level is an Unsupported Protocol Version,
    answered in the 3.1.1 format (return code 0x01, MQTT-3.1.2-2) since the
    client's format is unknown. Past the level byte, a v5 CONNECT's errors
    may be answered with a v5 CONNACK (5.0 §4.13.1).
    """
    name, pos = read_string(buf, pos, end)
    level, pos = read_byte(buf, pos, end)
    levels = _LEVELS_BY_NAME.get(name)
    if levels is None:
        raise ProtocolError("protocol name %r is not MQTT (MQTT-3.1.2-1)" % (name,))
    if level not in levels:
        raise UnsupportedProtocolVersion("protocol %r level %d (MQTT-3.1.2-2)" % (name, level),
                                         connack_level=MQTT_3_1_1)
    try:
        return _connect_body(level, buf, pos, end)
    except CodecError as error:
        if level == MQTT_5:
            error.connack_level = MQTT_5
        raise


def _connect_body(level: int, buf, pos: int, end: int) -> Connect:
    flags, pos = read_byte(buf, pos, end)
    keep_alive, pos = read_u16(buf, pos, end)
    if flags & 0x01:
        raise MalformedPacket("reserved CONNECT flag set (MQTT-3.1.2-3)")
    has_will = flags & 0x04
    will_qos = flags >> 3 & 3
    will_retain = bool(flags & 0x20)
    if not has_will and (will_qos or will_retain):
        # 5.0 MQTT-3.1.2-11, -3.1.2-13 (3.1.1 MQTT-3.1.2-13, -3.1.2-15)
        raise MalformedPacket("Will QoS or Will Retain without the Will Flag (MQTT-3.1.2-11)")
    if will_qos == 3:
        raise MalformedPacket("Will QoS 3 (MQTT-3.1.2-12)")
    has_username = flags & 0x80
    has_password = flags & 0x40
    if has_password and not has_username and level != MQTT_5:
        # 3.1.1 only: "If the User Name Flag is set to 0, the Password Flag MUST be set to 0";
        # MQTT 5 allows a password alone (5.0 §3.1.2.9).
        raise MalformedPacket("Password Flag without the User Name Flag (3.1.1 MQTT-3.1.2-22)")
    properties = NO_PROPERTIES
    if level == MQTT_5:
        properties, pos = decode_properties(buf, pos, end, CONNECT)
        if "authentication_data" in properties and "authentication_method" not in properties:
            raise ProtocolError("Authentication Data without Authentication Method (5.0 §3.1.2.11.10)")
    client_id, pos = read_string(buf, pos, end)  # its policy (length, characters) is the caller's
    will = None
    if has_will:
        will_properties = NO_PROPERTIES
        if level == MQTT_5:
            will_properties, pos = decode_properties(buf, pos, end, WILL_PROPERTIES)
        topic, pos = read_string(buf, pos, end)
        error = topic_name_error(topic)
        if error is not None:
            # 5.0 Table 3-1: 0x90 "The Will Topic Name is not malformed, but is not accepted".
            raise TopicNameInvalid("Will Topic: " + error)
        payload, pos = read_binary(buf, pos, end)
        will = Will(topic, payload, will_qos, will_retain, will_properties)
    username = password = None
    if has_username:
        username, pos = read_string(buf, pos, end)
    if has_password:
        password, pos = read_binary(buf, pos, end)
    _finish(pos, end, CONNECT)
    return Connect(level, client_id, bool(flags & 0x02), keep_alive, username, password, will, properties)


def decode_connack(first, buf, pos: int, end: int, level: int) -> Connack:
    """CONNACK (5.0 §3.2; 3.1.1 §3.2)."""
    flags, pos = read_byte(buf, pos, end)
    code, pos = read_byte(buf, pos, end)
    session_present = False
    if level != MQTT_3_1:  # 3.1's first byte is reserved and unused
        if flags & 0xFE:
            raise MalformedPacket("reserved CONNACK flags set (MQTT-3.2.2-1)")
        session_present = bool(flags)
    properties = NO_PROPERTIES
    if level == MQTT_5:
        properties, pos = decode_properties(buf, pos, end, CONNACK)
        _check_reason(code, CONNACK)
    elif code not in CONNACK_RETURN_CODES:
        raise ProtocolError("CONNACK return code %d is reserved (3.1.1 §3.2.2.3)" % code)
    if session_present and code:
        raise ProtocolError("Session Present with a refusal (MQTT-3.2.2-6)")
    _finish(pos, end, CONNACK)
    return Connack(session_present, code, properties)


def decode_publish(first, buf, pos: int, end: int, level: int) -> Publish:
    """PUBLISH (5.0 §3.3). The payload is ``buf[payload_start:end]``, the one copy."""
    qos = first >> 1 & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3 (MQTT-3.3.1-4)")
    if first & 0x08 and not qos and level != MQTT_3_1:
        raise MalformedPacket("DUP set on a QoS 0 PUBLISH (MQTT-3.3.1-2)")
    if pos + 2 > end:
        raise MalformedPacket("PUBLISH without its topic name")
    start = pos + 2
    pos = start + (buf[pos] << 8 | buf[pos + 1])
    if pos > end:
        raise MalformedPacket("PUBLISH topic name runs past the packet")
    try:  # primitives.utf8, inline on the hot path
        topic = buf[start:pos].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("ill-formed UTF-8 in topic name (MQTT-1.5.4-1)") from None
    if "\x00" in topic:
        raise MalformedPacket("U+0000 in topic name (MQTT-1.5.4-2)")
    packet_id = None
    if qos:
        packet_id, pos = _packet_id(buf, pos, end, PUBLISH)
    properties = NO_PROPERTIES
    if level == MQTT_5:
        if pos < end and not buf[pos]:
            pos += 1
        else:
            properties, pos = decode_properties(buf, pos, end, PUBLISH)
    if not topic:
        # 5.0 §3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there is no
        # Topic Alias"; the alias itself is resolved by the protocol layer (3.1.1: MQTT-4.7.3-1).
        if "topic_alias" not in properties:
            raise ProtocolError("empty topic name without a Topic Alias (5.0 §3.3.2.1)")
    elif "+" in topic or "#" in topic:
        # MQTT-3.3.2-2 names no reason; 0x90 is the one for a topic name the receiver refuses.
        raise TopicNameInvalid("wildcard in PUBLISH topic name (MQTT-3.3.2-2)")
    return Publish(topic, buf[pos:end], qos, (first & 1) == 1, (first & 8) == 8, packet_id, properties)


def _decode_ack(cls, first, buf, pos: int, end: int, level: int):
    """PUBACK, PUBREC, PUBREL, PUBCOMP (5.0 §3.4-3.7): a v5 reason code and
    properties that may be left out ("If the Remaining Length is 2 ... 0x00
    is used", "less than 4 there is no Property Length"); 3.1/3.1.1 have
    the packet identifier only (a Remaining Length of 2)."""
    ptype = cls.TYPE
    packet_id, pos = _packet_id(buf, pos, end, ptype)
    code, properties = _reason_and_properties(buf, pos, end, level, ptype)
    return cls(packet_id, code, properties)


def decode_puback(first, buf, pos, end, level):
    return _decode_ack(Puback, first, buf, pos, end, level)


def decode_pubrec(first, buf, pos, end, level):
    return _decode_ack(Pubrec, first, buf, pos, end, level)


def decode_pubrel(first, buf, pos, end, level):
    return _decode_ack(Pubrel, first, buf, pos, end, level)


def decode_pubcomp(first, buf, pos, end, level):
    return _decode_ack(Pubcomp, first, buf, pos, end, level)


def decode_subscribe(first, buf, pos: int, end: int, level: int) -> Subscribe:
    """SUBSCRIBE (5.0 §3.8). Filters are checked as UTF-8 only: their syntax
    is answered per filter in the SUBACK (``topics.parse_topic_filter``)."""
    packet_id, pos = _packet_id(buf, pos, end, SUBSCRIBE)
    properties = NO_PROPERTIES
    if level == MQTT_5:
        properties, pos = decode_properties(buf, pos, end, SUBSCRIBE)
    if pos == end:
        raise ProtocolError("SUBSCRIBE without a topic filter (MQTT-3.8.3-2; 3.1.1 MQTT-3.8.3-3)")
    subscriptions = []
    while pos < end:
        topic_filter, pos = read_string(buf, pos, end)
        if pos == end:
            raise MalformedPacket("topic filter without its subscription options")
        options = buf[pos]
        pos += 1
        qos = options & 3
        if level != MQTT_5:
            if options & 0xFC or qos == 3:
                raise MalformedPacket("requested QoS byte 0x%02X (3.1.1 MQTT-3-8.3-4)" % options)
            subscriptions.append((topic_filter, _QOS_ONLY[qos]))
            continue
        if options & 0xC0:
            raise MalformedPacket("reserved subscription option bits set (MQTT-3.8.3-5)")
        if qos == 3:
            raise ProtocolError("Maximum QoS 3 in subscription options (5.0 §3.8.3.1)")
        retain_handling = options >> 4 & 3
        if retain_handling == 3:
            raise ProtocolError("Retain Handling 3 in subscription options (5.0 §3.8.3.1)")
        no_local = bool(options & 0x04)
        if no_local and topic_filter.startswith(SHARE_PREFIX):
            raise ProtocolError("No Local on a shared subscription (MQTT-3.8.3-4)")
        subscriptions.append((topic_filter, SubscriptionOptions(qos, no_local, bool(options & 0x08), retain_handling)))
    return Subscribe(packet_id, subscriptions, properties)


def decode_suback(first, buf, pos: int, end: int, level: int) -> Suback:
    """SUBACK (5.0 §3.9): one code per filter of the SUBSCRIBE, so at least one."""
    packet_id, pos = _packet_id(buf, pos, end, SUBACK)
    properties = NO_PROPERTIES
    if level == MQTT_5:
        properties, pos = decode_properties(buf, pos, end, SUBACK)
    codes = list(buf[pos:end])
    if not codes:
        raise ProtocolError("SUBACK without a reason code (MQTT-3.9.3-1)")
    _check_reasons(codes, SUBACK, ALLOWED[SUBACK] if level == MQTT_5 else SUBACK_RETURN_CODES)
    return Suback(packet_id, codes, properties)


def decode_unsubscribe(first, buf, pos: int, end: int, level: int) -> Unsubscribe:
    """UNSUBSCRIBE (5.0 §3.10); filters checked as UTF-8 only, like SUBSCRIBE's."""
    packet_id, pos = _packet_id(buf, pos, end, UNSUBSCRIBE)
    properties = NO_PROPERTIES
    if level == MQTT_5:
        properties, pos = decode_properties(buf, pos, end, UNSUBSCRIBE)
    if pos == end:
        raise ProtocolError("UNSUBSCRIBE without a topic filter (MQTT-3.10.3-2)")
    topic_filters = []
    while pos < end:
        topic_filter, pos = read_string(buf, pos, end)
        topic_filters.append(topic_filter)
    return Unsubscribe(packet_id, topic_filters, properties)


def decode_unsuback(first, buf, pos: int, end: int, level: int) -> Unsuback:
    """UNSUBACK (5.0 §3.11): v5 has one code per filter; 3.1/3.1.1 only the packet identifier."""
    packet_id, pos = _packet_id(buf, pos, end, UNSUBACK)
    properties = NO_PROPERTIES
    codes = []
    if level == MQTT_5:
        properties, pos = decode_properties(buf, pos, end, UNSUBACK)
        codes = list(buf[pos:end])
        if not codes:
            raise ProtocolError("UNSUBACK without a reason code (MQTT-3.11.3-1)")
        _check_reasons(codes, UNSUBACK, ALLOWED[UNSUBACK])
        pos = end
    _finish(pos, end, UNSUBACK)
    return Unsuback(packet_id, codes, properties)


def decode_pingreq(first, buf, pos, end, level):
    """PINGREQ (5.0 §3.12): no variable header, no payload."""
    _finish(pos, end, PINGREQ)
    return PINGREQ_PACKET


def decode_pingresp(first, buf, pos, end, level):
    """PINGRESP (5.0 §3.13): no variable header, no payload."""
    _finish(pos, end, PINGRESP)
    return PINGRESP_PACKET


def _reason_packet(cls, buf, pos: int, end: int, level: int):
    """DISCONNECT and AUTH: a v5 reason code and properties, both optional
    (5.0 §3.14.2.1: "If the Remaining Length is less than 1 the value of 0x00
    ... is used"; §3.14.2.2.1: "less than 2, a value of 0 is used"; AUTH
    alike, §3.15.2.1); 3.1/3.1.1 DISCONNECTs have neither."""
    code, properties = _reason_and_properties(buf, pos, end, level, cls.TYPE)
    return cls(code, properties)


def _reason_and_properties(buf, pos: int, end: int, level: int, ptype: int):
    """The rest of a packet that ends with an optional v5 reason code and
    optional properties (a short form leaves them out: 0x00, none)."""
    code = 0
    properties = NO_PROPERTIES
    if level == MQTT_5 and pos < end:
        code = buf[pos]
        _check_reason(code, ptype)
        if pos + 1 < end:
            properties, pos = decode_properties(buf, pos + 1, end, ptype)
        else:
            pos += 1
    _finish(pos, end, ptype)
    return code, properties


def decode_disconnect(first, buf, pos, end, level):
    return _reason_packet(Disconnect, buf, pos, end, level)


def decode_auth(first, buf, pos, end, level):
    return _reason_packet(Auth, buf, pos, end, level)


#: The reader of each packet type but CONNECT, whose level comes from itself.
DECODERS = {
    CONNACK: decode_connack,
    PUBLISH: decode_publish,
    PUBACK: decode_puback,
    PUBREC: decode_pubrec,
    PUBREL: decode_pubrel,
    PUBCOMP: decode_pubcomp,
    SUBSCRIBE: decode_subscribe,
    SUBACK: decode_suback,
    UNSUBSCRIBE: decode_unsubscribe,
    UNSUBACK: decode_unsuback,
    PINGREQ: decode_pingreq,
    PINGRESP: decode_pingresp,
    DISCONNECT: decode_disconnect,
    AUTH: decode_auth,
}
