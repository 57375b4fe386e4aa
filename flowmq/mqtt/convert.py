"""MQTT <-> Message: what an MQTT PUBLISH becomes in the core, and the MQTT 5
properties a subscriber gets of a message that any protocol published.

- Topic: an MQTT topic name *is* the canonical topic (flowmq/core/topics.py),
  so it passes as it is; NATS writes the levels it cannot hold with the
  escape rule (README, "Escapes").
- MQTT 5 User Properties are the message's headers, in order, repeats kept
  (MQTT-3.3.2-17/18). A header value that is not text (from AMQP or Kafka)
  goes out as text: a number or boolean as it prints, bytes percent-encoded,
  a null value as the empty string.
- Response Topic is ``reply_to``; Correlation Data, Content Type, Payload
  Format Indicator and Message Expiry Interval are the ``Properties``
  ``correlation``, ``content_type``, ``utf8`` and ``expiry`` (made absolute
  on arrival, counted down to what is left on the way out, 5.0 §3.3.2.3.3).
- QoS: ``Properties.qos`` holds a QoS 1 or 2 publish's QoS (it is durable).
  A QoS 0 publish without other properties has no Properties at all, so that
  a NATS subscriber gets a plain MSG; it is told apart from a message of a
  protocol that has no QoS (NATS) by its origin (``is_mqtt``). A message
  without a QoS of its own goes to each MQTT subscriber at the QoS that
  subscription was granted (docs/ARCHITECTURE.md, "MQTT").
- The other properties (message id, key, timestamp, priority, type, user
  id, app id, content encoding) go to MQTT 5 subscribers as user
  properties named as the NATS headers (``PROPERTY_HEADERS``), unless the
  headers hold one of that name already (a NATS publish's ``Nats-Msg-Id``).
- MQTT 3.1/3.1.1 have none of the properties: their subscribers get topic,
  payload, QoS and retain only.
"""

from __future__ import annotations

import time
from urllib.parse import quote_from_bytes

from flowmq.core.message import PROPERTY_HEADERS, Message, Properties
from flowmq.mqtt.codec.packets import NO_PROPERTIES, PUBLISH
from flowmq.mqtt.codec.properties import BY_NAME, encode_property_list, property_block

#: The protocol name MQTT connections and sessions carry (``Message.origin.protocol``).
MQTT = "mqtt"

# The Properties of a publish that has nothing but its QoS (shared: never changed).
_QOS_ONLY = {1: Properties(qos=1), 2: Properties(qos=2)}
_NS = 1_000_000_000
# A message expiry interval is a Four Byte Integer of seconds (5.0 §3.3.2.3.3).
_MAX_INTERVAL = 0xFFFFFFFF
# The wire-cache key of a message's encoded v5 properties (those the same for every subscriber).
_PROPERTIES_KEY = "mqtt.properties"
# The properties that have an MQTT 5 field (or, QoS, a place in the fixed header).
_MQTT_FIELDS = frozenset(("correlation", "content_type", "utf8", "expiry", "qos"))
# The block of a PUBLISH without properties: its length, 0.
_NO_PROPERTIES_BLOCK = b"\x00"
# The properties each delivery adds of its own.
_SUBSCRIPTION_IDENTIFIER = BY_NAME["subscription_identifier"]
_TOPIC_ALIAS = BY_NAME["topic_alias"]
_CORRELATION_DATA = BY_NAME["correlation_data"]
_EXPIRY = BY_NAME["message_expiry_interval"]


class MqttMessage(Message):
    """A Message an MQTT client published: with its RETAIN flag, which a
    subscription with Retain As Published passes on (5.0 §3.8.3.1)."""

    __slots__ = ("retain",)

    def __init__(self, topic, payload, headers=None, reply_to=None, origin=None, properties=None, retain=False):
        Message.__init__(self, topic, payload, headers, reply_to, origin, properties)
        self.retain = retain


def is_mqtt(message) -> bool:
    """Was ``message`` published by an MQTT client (its QoS is its own)?"""
    return getattr(message.origin, "protocol", None) == MQTT


def publish_qos(message):
    """The QoS the publisher gave ``message``: 0, 1 or 2, or None for a
    message of a protocol without QoS (it gets the subscription's)."""
    properties = message.properties
    if properties is not None and properties.qos is not None:
        return properties.qos
    return 0 if is_mqtt(message) else None


def from_mqtt(packet, origin, retain: bool = False) -> MqttMessage:
    """The core Message of a PUBLISH (or a Will) with a resolved topic."""
    props = packet.properties
    if props is NO_PROPERTIES:
        return MqttMessage(packet.topic, packet.payload, None, None, origin, _QOS_ONLY.get(packet.qos), retain)
    headers = props.get("user_property")
    properties = None
    expiry = props.get("message_expiry_interval")
    correlation = props.get("correlation_data")
    content_type = props.get("content_type")
    utf8 = props.get("payload_format_indicator")
    if expiry is not None or correlation is not None or content_type is not None or utf8 is not None:
        properties = Properties(
            content_type=content_type, correlation=correlation, qos=packet.qos or None,
            expiry=None if expiry is None else time.time_ns() + expiry * _NS,
            utf8=None if utf8 is None else bool(utf8))
    elif packet.qos:
        properties = _QOS_ONLY[packet.qos]
    return MqttMessage(packet.topic, packet.payload, tuple(headers) if headers else None,
                       props.get("response_topic"), origin, properties, retain)


def expired(message, now_ns: int) -> bool:
    """Is the message past its expiry (it is not delivered any more)?"""
    properties = message.properties
    return properties is not None and properties.expiry is not None and properties.expiry <= now_ns


def properties_block(message, subscription_ids=(), topic_alias=None, correlation=None) -> bytes:
    """The encoded MQTT 5 property block of a PUBLISH of ``message`` to one
    subscriber: what the message carries (encoded once per message and kept
    in its wire cache) and what is this delivery's own, added as bytes: the
    matching subscriptions' identifiers, a topic alias, the expiry left, and
    the correlation data that a requester's answer lost on the way through a
    protocol without it."""
    properties = message.properties
    if message.headers is None and message.reply_to is None and (
            properties is None or properties is _QOS_ONLY[1] or properties is _QOS_ONLY[2]):
        body = b""  # the common case, a message with nothing but topic, payload and QoS: nothing to encode
        expiry = None
    else:
        body = message.cached(_PROPERTIES_KEY, _shared_body)
        expiry = properties.expiry if properties is not None else None
    if not subscription_ids and not topic_alias and correlation is None and expiry is None:
        return property_block(body) if body else _NO_PROPERTIES_BLOCK
    extra = []
    for identifier in subscription_ids:
        extra.append(_SUBSCRIPTION_IDENTIFIER.prefix + _SUBSCRIPTION_IDENTIFIER.write(identifier))
    if topic_alias:
        extra.append(_TOPIC_ALIAS.prefix + _TOPIC_ALIAS.write(topic_alias))
    if correlation is not None and (properties is None or properties.correlation is None):
        extra.append(_CORRELATION_DATA.prefix + _CORRELATION_DATA.write(correlation))
    if expiry is not None:
        left = -(-(expiry - time.time_ns()) // _NS)  # seconds left, rounded up
        extra.append(_EXPIRY.prefix + _EXPIRY.write(max(0, min(left, _MAX_INTERVAL))))
    return property_block(body, *extra)


def _shared_body(message) -> bytes:
    return encode_property_list(_shared_properties(message), PUBLISH)


def _shared_properties(message) -> dict:
    values = {}
    pairs = [(name, value if type(value) is str else _text(value)) for name, value in message.headers or ()]
    for field, value in _without_slot(message.properties):
        header = PROPERTY_HEADERS[field]
        lowered = header.lower()
        if not any(name.lower() == lowered for name, _ in pairs):  # a NATS publish has it as a header already
            pairs.append((header, _text(value)))
    if pairs:
        values["user_property"] = pairs
    if message.reply_to is not None:
        values["response_topic"] = message.reply_to
    properties = message.properties
    if properties is not None:
        if properties.correlation is not None:
            values["correlation_data"] = properties.correlation
        if properties.content_type is not None:
            values["content_type"] = properties.content_type
        if properties.utf8 is not None:
            values["payload_format_indicator"] = int(properties.utf8)
    return values


def _without_slot(properties) -> list:
    """The properties MQTT 5 has no field for (they go as user properties)."""
    if properties is None:
        return []
    return [(field, value) for field, value in properties.items() if field not in _MQTT_FIELDS]


def _text(value) -> str:
    """A typed header value as User Property text."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return quote_from_bytes(bytes(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
