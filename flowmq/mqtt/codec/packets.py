"""The MQTT control packets as plain value objects (MQTT 3.1.1 §2.2.1, 5.0 §2.1.2).

One class per control packet, with ``__slots__`` (PUBLISH is built once per
message on the hot path) and ``__eq__``/``__repr__`` over its slots, so a
decoded packet compares equal to the one that was encoded. The classes hold
values only: ``encode.py`` writes them, ``decode.py`` reads them, and
neither the classes nor the codec check what a value means to a session.

Field conventions (both directions, every level):

- strings (topics, client id, user name, property strings) are ``str``;
  payloads, passwords and binary properties are ``bytes``;
- ``properties`` is a mapping keyed by the snake_case property name
  (``properties.py``). A packet without properties holds the shared,
  read-only ``NO_PROPERTIES`` (no dict is built per packet): copy before
  changing. MQTT 3.1/3.1.1 packets always hold ``NO_PROPERTIES``;
- ``reason_code`` is the MQTT 5 reason code, or for a 3.1/3.1.1 CONNACK the
  return code (``reasons.py``); acknowledgements of 3.1/3.1.1 carry 0x00;
- a packet identifier is an int in 1..65535, None where the packet has none
  (a QoS 0 PUBLISH).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

# The control packet types: byte 1, bits 7-4 of the fixed header (5.0 §2.1.2).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15  # MQTT 5 only; "reserved" in 3.1.1

#: The name of each packet type, for messages.
TYPE_NAMES = {CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK", PUBREC: "PUBREC",
              PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK",
              UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ", PINGRESP: "PINGRESP",
              DISCONNECT: "DISCONNECT", AUTH: "AUTH"}

#: The protocol levels (the CONNECT "Protocol Level" byte) and their names.
MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5
PROTOCOL_NAMES = {MQTT_3_1: "MQIsdp", MQTT_3_1_1: "MQTT", MQTT_5: "MQTT"}

#: The properties of a packet that has none: shared and read-only.
NO_PROPERTIES = MappingProxyType({})


class Packet:
    """Base of the packet classes: equality and repr over every slot of the class and its bases."""

    __slots__ = ()
    TYPE = 0
    _fields = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._fields = tuple(name for klass in reversed(cls.__mro__) for name in klass.__dict__.get("__slots__", ()))

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields)

    __hash__ = None  # mutable values

    def __repr__(self):
        fields = ", ".join("%s=%r" % (name, getattr(self, name)) for name in self._fields)
        return "%s(%s)" % (type(self).__name__, fields)


class Will(Packet):
    """The Will Message of a CONNECT (5.0 §3.1.2.5, §3.1.3.2-4)."""

    __slots__ = ("topic", "payload", "qos", "retain", "properties")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, properties=NO_PROPERTIES):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties


class Connect(Packet):
    """CONNECT (5.0 §3.1). ``clean_start`` is 3.1.1's Clean Session flag."""

    __slots__ = ("protocol_level", "client_id", "clean_start", "keep_alive", "username", "password", "will",
                 "properties")
    TYPE = CONNECT

    def __init__(self, protocol_level: int, client_id: str, clean_start: bool = True, keep_alive: int = 0,
                 username=None, password=None, will=None, properties=NO_PROPERTIES):
        self.protocol_level = protocol_level
        self.client_id = client_id
        self.clean_start = clean_start
        self.keep_alive = keep_alive
        self.username = username  # str or None (the User Name flag)
        self.password = password  # bytes or None (the Password flag)
        self.will = will  # Will or None (the Will flag)
        self.properties = properties


class Connack(Packet):
    """CONNACK (5.0 §3.2): the v5 Connect Reason Code, or the 3.1.1 return code."""

    __slots__ = ("session_present", "reason_code", "properties")
    TYPE = CONNACK

    def __init__(self, session_present: bool = False, reason_code: int = 0, properties=NO_PROPERTIES):
        self.session_present = session_present
        self.reason_code = reason_code
        self.properties = properties


class Publish(Packet):
    """PUBLISH (5.0 §3.3). In MQTT 5 ``topic`` may be "" when ``properties``
    has a ``topic_alias``: the protocol layer resolves the alias."""

    __slots__ = ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
    TYPE = PUBLISH

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, dup: bool = False,
                 packet_id=None, properties=NO_PROPERTIES):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = properties


class _Ack(Packet):
    """PUBACK, PUBREC, PUBREL and PUBCOMP share one layout (5.0 §3.4-3.7)."""

    __slots__ = ("packet_id", "reason_code", "properties")

    def __init__(self, packet_id: int, reason_code: int = 0, properties=NO_PROPERTIES):
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties


class Puback(_Ack):
    __slots__ = ()
    TYPE = PUBACK


class Pubrec(_Ack):
    __slots__ = ()
    TYPE = PUBREC


class Pubrel(_Ack):
    __slots__ = ()
    TYPE = PUBREL


class Pubcomp(_Ack):
    __slots__ = ()
    TYPE = PUBCOMP


class SubscriptionOptions(NamedTuple):
    """The Subscription Options byte (5.0 §3.8.3.1); 3.1.1 has the QoS only."""

    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


class Subscribe(Packet):
    """SUBSCRIBE (5.0 §3.8): ``subscriptions`` is a list of (topic filter,
    SubscriptionOptions), in the packet's order."""

    __slots__ = ("packet_id", "subscriptions", "properties")
    TYPE = SUBSCRIBE

    def __init__(self, packet_id: int, subscriptions: list, properties=NO_PROPERTIES):
        self.packet_id = packet_id
        self.subscriptions = subscriptions
        self.properties = properties


class Suback(Packet):
    """SUBACK (5.0 §3.9): one reason code (3.1.1: granted QoS or 0x80) per filter."""

    __slots__ = ("packet_id", "reason_codes", "properties")
    TYPE = SUBACK

    def __init__(self, packet_id: int, reason_codes: list, properties=NO_PROPERTIES):
        self.packet_id = packet_id
        self.reason_codes = reason_codes
        self.properties = properties


class Unsubscribe(Packet):
    """UNSUBSCRIBE (5.0 §3.10): ``topic_filters`` is a list of str."""

    __slots__ = ("packet_id", "topic_filters", "properties")
    TYPE = UNSUBSCRIBE

    def __init__(self, packet_id: int, topic_filters: list, properties=NO_PROPERTIES):
        self.packet_id = packet_id
        self.topic_filters = topic_filters
        self.properties = properties


class Unsuback(Packet):
    """UNSUBACK (5.0 §3.11): one reason code per filter in MQTT 5; 3.1/3.1.1
    UNSUBACKs carry none (``reason_codes`` is [])."""

    __slots__ = ("packet_id", "reason_codes", "properties")
    TYPE = UNSUBACK

    def __init__(self, packet_id: int, reason_codes=(), properties=NO_PROPERTIES):
        self.packet_id = packet_id
        self.reason_codes = list(reason_codes)
        self.properties = properties


class Pingreq(Packet):
    """PINGREQ (5.0 §3.12); the decoder hands out one shared instance."""

    __slots__ = ()
    TYPE = PINGREQ


class Pingresp(Packet):
    """PINGRESP (5.0 §3.13); the decoder hands out one shared instance."""

    __slots__ = ()
    TYPE = PINGRESP


class Disconnect(Packet):
    """DISCONNECT (5.0 §3.14); 3.1/3.1.1 DISCONNECTs have reason 0x00 and no properties."""

    __slots__ = ("reason_code", "properties")
    TYPE = DISCONNECT

    def __init__(self, reason_code: int = 0, properties=NO_PROPERTIES):
        self.reason_code = reason_code
        self.properties = properties


class Auth(Packet):
    """AUTH (5.0 §3.15), MQTT 5 only."""

    __slots__ = ("reason_code", "properties")
    TYPE = AUTH

    def __init__(self, reason_code: int = 0, properties=NO_PROPERTIES):
        self.reason_code = reason_code
        self.properties = properties


PINGREQ_PACKET = Pingreq()
PINGRESP_PACKET = Pingresp()

#: The class of each packet type, by type number.
CLASSES = {cls.TYPE: cls for cls in (Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe,
                                     Suback, Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth)}
