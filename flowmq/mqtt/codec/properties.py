"""MQTT 5 properties (5.0 §2.2.2, Table 2-4): all 27, their types, the packets
that may carry them, and the property block's reading and writing.

A property block is a Variable Byte Integer length, then properties, each an
identifier and a value of the identifier's type. Decoded, a block is a dict
keyed by the snake_case property name (``NAMES``), or the shared empty
``NO_PROPERTIES`` when the length is 0 (most packets: no dict is built).
``user_property`` maps to a list of (name, value) str pairs in wire order
(the server "MUST maintain the order", MQTT-3.3.2-18) and
``subscription_identifier`` to a list of ints (a PUBLISH to a client carries
one per matching subscription, 5.0 §3.3.4); every other property maps to
its one value (int, str or bytes).

The checks, per the spec:

- an identifier that is not valid for the packet (or unknown) is a Malformed
  Packet (5.0 §2.2.2.2: "A Control Packet which contains an Identifier which
  is not valid for its packet type ... is a Malformed Packet");
- a property repeated where the spec forbids it is a Protocol Error: only
  User Property, and Subscription Identifier in a PUBLISH, may repeat (each
  property's section: "It is a Protocol Error to include ... more than once");
- these values are Protocol Errors: anything but 0 or 1 in the Byte
  properties defined as 0 or 1 (Payload Format Indicator, Request Problem/
  Response Information, Maximum QoS, Retain/Wildcard Subscription/
  Subscription Identifier/Shared Subscription Available), a zero Receive
  Maximum (§3.1.2.11.3), Maximum Packet Size (§3.1.2.11.4) or Subscription
  Identifier (§3.3.2.3.8), and a Response Topic that is no valid topic name
  (MQTT-3.3.2-14). (The spec says "a value other than 0 or 1" is a Protocol
  Error for all those bytes but the Payload Format Indicator, whose other
  values are undefined: treated alike.)
- a Topic Alias of 0 is "Topic Alias invalid" (0x94, 5.0 §3.3.4).

Rules about the packet or the connection are checked elsewhere: Authentication
Data without an Authentication Method in a CONNECT (``bodies.py``), a
Subscription Identifier in a client's PUBLISH (``decode.py``), a Topic Alias
above the maximum (the protocol layer).
"""

from __future__ import annotations

from .errors import MalformedPacket, ProtocolError, TopicAliasInvalid
from .packets import (AUTH, CONNACK, CONNECT, DISCONNECT, NO_PROPERTIES, PUBACK, PUBCOMP, PUBLISH, PUBREC,
                      PUBREL, SUBACK, SUBSCRIBE, TYPE_NAMES, UNSUBACK, UNSUBSCRIBE)
from .primitives import (encode_binary, encode_byte, encode_string, encode_string_pair, encode_u16, encode_u32,
                         encode_varint, read_binary, read_byte, read_string, read_string_pair, read_u16, read_u32,
                         read_varint)
from .topics import topic_name_error

#: The Will Properties of a CONNECT have their own set (5.0 §3.1.3.2); 0 is
#: no packet type (it is "Reserved" in Table 2-1), so it names them here.
WILL_PROPERTIES = 0

_KIND_NAMES = dict(TYPE_NAMES)
_KIND_NAMES[WILL_PROPERTIES] = "Will Properties"

# The data types (5.0 §1.5) as (reader, writer).
BYTE = (read_byte, encode_byte)
TWO_BYTE_INTEGER = (read_u16, encode_u16)
FOUR_BYTE_INTEGER = (read_u32, encode_u32)
VARIABLE_BYTE_INTEGER = (read_varint, encode_varint)
UTF8_STRING = (read_string, encode_string)
BINARY_DATA = (read_binary, encode_binary)
UTF8_STRING_PAIR = (read_string_pair, encode_string_pair)


def _zero_or_one(name, value):
    if value > 1:
        raise ProtocolError("%s is %d, not 0 or 1" % (name, value))


def _not_zero(name, value):
    if not value:
        raise ProtocolError("%s is 0" % name)


def _topic_alias(name, value):
    if not value:
        raise TopicAliasInvalid("Topic Alias 0 (MQTT-3.3.2-8)")


def _response_topic(name, value):
    error = topic_name_error(value)
    if error is not None:
        raise ProtocolError("Response Topic: " + error)


class Property:
    """One row of Table 2-4."""

    __slots__ = ("identifier", "name", "read", "write", "kinds", "repeats", "check", "is_list", "prefix")

    def __init__(self, identifier, name, data_type, kinds, check=None, repeats=()):
        self.identifier = identifier
        self.name = name
        self.read, self.write = data_type
        self.kinds = _mask(kinds)  # the packets (and Will Properties) that may carry it
        self.repeats = _mask(repeats)  # those where it may appear more than once
        self.check = check
        self.is_list = bool(repeats)  # decoded as a list, in every packet
        self.prefix = encode_varint(identifier)

    def __repr__(self):
        return "Property(0x%02X, %r)" % (self.identifier, self.name)


def _mask(kinds) -> int:
    mask = 0
    for kind in kinds:
        mask |= 1 << kind
    return mask


_WILL_AND_PUBLISH = (PUBLISH, WILL_PROPERTIES)
_EVERY_KIND = (CONNECT, CONNACK, PUBLISH, WILL_PROPERTIES, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK,
               UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH)

#: Table 2-4, by identifier.
PROPERTIES = (
    Property(0x01, "payload_format_indicator", BYTE, _WILL_AND_PUBLISH, _zero_or_one),
    Property(0x02, "message_expiry_interval", FOUR_BYTE_INTEGER, _WILL_AND_PUBLISH),
    Property(0x03, "content_type", UTF8_STRING, _WILL_AND_PUBLISH),
    Property(0x08, "response_topic", UTF8_STRING, _WILL_AND_PUBLISH, _response_topic),
    Property(0x09, "correlation_data", BINARY_DATA, _WILL_AND_PUBLISH),
    Property(0x0B, "subscription_identifier", VARIABLE_BYTE_INTEGER, (PUBLISH, SUBSCRIBE), _not_zero,
             repeats=(PUBLISH,)),
    Property(0x11, "session_expiry_interval", FOUR_BYTE_INTEGER, (CONNECT, CONNACK, DISCONNECT)),
    Property(0x12, "assigned_client_identifier", UTF8_STRING, (CONNACK,)),
    Property(0x13, "server_keep_alive", TWO_BYTE_INTEGER, (CONNACK,)),
    Property(0x15, "authentication_method", UTF8_STRING, (CONNECT, CONNACK, AUTH)),
    Property(0x16, "authentication_data", BINARY_DATA, (CONNECT, CONNACK, AUTH)),
    Property(0x17, "request_problem_information", BYTE, (CONNECT,), _zero_or_one),
    Property(0x18, "will_delay_interval", FOUR_BYTE_INTEGER, (WILL_PROPERTIES,)),
    Property(0x19, "request_response_information", BYTE, (CONNECT,), _zero_or_one),
    Property(0x1A, "response_information", UTF8_STRING, (CONNACK,)),
    Property(0x1C, "server_reference", UTF8_STRING, (CONNACK, DISCONNECT)),
    Property(0x1F, "reason_string", UTF8_STRING,
             (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH)),
    Property(0x21, "receive_maximum", TWO_BYTE_INTEGER, (CONNECT, CONNACK), _not_zero),
    Property(0x22, "topic_alias_maximum", TWO_BYTE_INTEGER, (CONNECT, CONNACK)),
    Property(0x23, "topic_alias", TWO_BYTE_INTEGER, (PUBLISH,), _topic_alias),
    Property(0x24, "maximum_qos", BYTE, (CONNACK,), _zero_or_one),
    Property(0x25, "retain_available", BYTE, (CONNACK,), _zero_or_one),
    Property(0x26, "user_property", UTF8_STRING_PAIR, _EVERY_KIND, repeats=_EVERY_KIND),
    Property(0x27, "maximum_packet_size", FOUR_BYTE_INTEGER, (CONNECT, CONNACK), _not_zero),
    Property(0x28, "wildcard_subscription_available", BYTE, (CONNACK,), _zero_or_one),
    Property(0x29, "subscription_identifier_available", BYTE, (CONNACK,), _zero_or_one),
    Property(0x2A, "shared_subscription_available", BYTE, (CONNACK,), _zero_or_one),
)
BY_IDENTIFIER = {prop.identifier: prop for prop in PROPERTIES}
BY_NAME = {prop.name: prop for prop in PROPERTIES}
NAMES = tuple(BY_NAME)


def decode_properties(buf, pos: int, end: int, kind: int):
    """Read the property block at ``pos`` of a packet of type ``kind``; return (properties, next_pos)."""
    if pos < end and not buf[pos]:
        return NO_PROPERTIES, pos + 1
    length, pos = read_varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket("property length runs past the packet")
    bit = 1 << kind
    found = {}
    while pos < stop:
        prop = BY_IDENTIFIER.get(buf[pos])
        if prop is None or not prop.kinds & bit:
            raise MalformedPacket("property 0x%02X not valid in %s (5.0 §2.2.2.2)" % (buf[pos], _KIND_NAMES[kind]))
        value, pos = prop.read(buf, pos + 1, stop)
        if prop.check is not None:
            prop.check(prop.name, value)
        name = prop.name
        if prop.is_list:
            values = found.get(name)
            if values is None:
                found[name] = [value]
            elif prop.repeats & bit:
                values.append(value)
            else:
                raise ProtocolError("%s more than once in %s" % (name, _KIND_NAMES[kind]))
        elif name in found:
            raise ProtocolError("%s more than once in %s" % (name, _KIND_NAMES[kind]))
        else:
            found[name] = value
    return found, stop


def encode_property_list(properties, kind: int) -> bytes:
    """Write the properties of a packet of type ``kind`` without the block's length.

    ``properties`` is a mapping as ``decode_properties`` returns; the list
    properties take any iterable. A name that is unknown or not valid in the
    packet raises ValueError (a caller's bug, not a peer's).
    """
    bit = 1 << kind
    parts = []
    for name, value in properties.items():
        prop = BY_NAME.get(name)
        if prop is None or not prop.kinds & bit:
            raise ValueError("property %r not valid in %s" % (name, _KIND_NAMES[kind]))
        if prop.is_list:
            parts.extend(prop.prefix + prop.write(item) for item in value)
        else:
            parts.append(prop.prefix + prop.write(value))
    return b"".join(parts)


def property_block(*lists: bytes) -> bytes:
    """A property block (its length, then the properties) from lists written apart.

    The broker's fan-out writes a message's own properties once and adds
    each subscriber's Subscription Identifiers (5.0 §3.3.4) to them here,
    so ``encode_publish`` gets a whole block without re-encoding the rest.
    """
    body = b"".join(lists)
    return encode_varint(len(body)) + body


def encode_properties(properties, kind: int) -> bytes:
    """Write a whole property block for a packet of type ``kind``."""
    if not properties:
        return b"\x00"
    return property_block(encode_property_list(properties, kind))
