"""The protocol-neutral message that every protocol publishes into the core.

Each protocol converts its own frames to a Message on the way in and from a
Message on the way out (flowmq/nats/convert.py for NATS); nothing in the
core looks at protocol details. docs/ARCHITECTURE.md ("The message") says which field each
protocol fills and why; README.md has the mapping table.
"""

from __future__ import annotations


class Message:
    """One published message.

    - ``topic``: the canonical unified topic (``a/b/c``).
    - ``payload``: the body, as bytes, sliced once out of the receive buffer;
      the core passes this one object to every delivery.
    - ``headers``: None, or a tuple of ``(name, value)`` pairs, in order; a
      name (str) may repeat (NATS and Kafka headers, MQTT 5 user properties
      all allow it). A value is a str, or one of the typed values of
      ``flowmq.core.values`` (bytes, None for a Kafka null header, and the
      AMQP field-table types). A message from NATS has str values only.
    - ``reply_to``: None, or the canonical topic where replies go (NATS reply
      subject, MQTT 5 response topic, AMQP reply_to).
    - ``origin``: the consumer object of the connection that published it
      (None for messages made inside the broker), so that a connection that
      asked for no echo does not get its own messages back.
    - ``properties``: None, or the message's ``Properties`` (the fields that
      MQTT, AMQP and Kafka carry beyond these).
    - ``receipt``: None, or the Receipt of a publisher that waits until every
      destination that keeps the message has stored it.
    - ``wire_cache``: None, or a dict in which protocols keep the encoded
      pieces of this message that every delivery to them reuses (the NATS
      header block, say), keyed by a name each protocol owns. Only ever a
      cache: everything in it can be built again from the fields above.
    """

    __slots__ = ("topic", "payload", "headers", "reply_to", "origin", "properties", "receipt", "wire_cache")

    def __init__(self, topic: str, payload: bytes, headers=None, reply_to=None, origin=None, properties=None):
        self.topic = topic
        self.payload = payload
        self.headers = headers
        self.reply_to = reply_to
        self.origin = origin
        self.properties = properties
        self.receipt = None
        self.wire_cache = None

    def cached(self, key: str, build):
        """The value stored under ``key`` in the wire cache, built by ``build(self)`` once."""
        cache = self.wire_cache
        if cache is None:
            cache = self.wire_cache = {}
        value = cache.get(key)
        if value is None:
            value = cache[key] = build(self)
        return value

    def __repr__(self):
        return "<Message %r %d bytes>" % (self.topic, len(self.payload))


class MessageRun:
    """A run of messages that one publisher published in a row to one
    topic, alike but for their payloads (``Broker.publish_run``; NATS: PUBs
    with the same control line in one read): the ``first`` Message and
    every message's payload, in order.

    It reads as a sequence of Messages. Those after the first are made the
    first time they are needed, once: a consumer that takes the payloads
    only, as a NATS connection does, costs no Message per payload. Each
    has the first's fields but its own payload (none of them has a receipt
    or a wire cache to start with).

    ``size`` is the size of every payload when they all have one (NATS:
    the size on the PUB line they share), else None: a consumer can then
    frame them all alike.

    ``framed`` is None, or ``(key, frames)``: the wire bytes of the whole
    run that the last consumer made, and what they depend on besides the
    payloads (a key the protocol defines), so that the next consumer
    that would make the same bytes sends those (NATS subscribers of a
    fan-out whose MSG lines are alike). It lives as long as the run: the
    deliveries of one publish.

    ``fanout`` is True when the broker hands the run to more than one
    consumer (it says so before the first): frames that the consumers can
    share (``framed``) are then worth more than each one's own.
    """

    __slots__ = ("first", "payloads", "size", "framed", "fanout", "_messages")

    def __init__(self, first: Message, payloads: list, size=None):
        self.first = first
        self.payloads = payloads
        self.size = size
        self.framed = None
        self.fanout = False
        self._messages = None

    def messages(self) -> list:
        """The run's Messages, made once."""
        if self._messages is None:
            first = self.first
            self._messages = [first] + [
                Message(first.topic, payload, first.headers, first.reply_to, first.origin, first.properties)
                for payload in self.payloads[1:]]
        return self._messages

    def at(self, position: int) -> Message:
        """The Message at ``position``: the run's own if its Messages have
        been made, else made alone (the broker asks once per position:
        ``Broker.deliver_run``)."""
        if position == 0:
            return self.first
        if self._messages is not None:
            return self._messages[position]
        first = self.first
        return Message(first.topic, self.payloads[position], first.headers, first.reply_to, first.origin,
                       first.properties)

    def share(self, positions: list) -> "MessageRun":
        """The run of the messages at ``positions`` (two or more, in order),
        a queue group member's share, with the run's Messages where they
        have been made; else only its first is made (unless it is the
        run's own first), the others when the share's consumer needs
        them."""
        payloads = self.payloads
        share = MessageRun(self.at(positions[0]), [payloads[position] for position in positions], self.size)
        if self._messages is not None:
            share._messages = [self._messages[position] for position in positions]
        return share

    def __len__(self):
        return len(self.payloads)

    def __getitem__(self, index):
        return self.first if index == 0 else self.messages()[index]

    def __iter__(self):
        return iter(self.messages())


class Properties:
    """What a message carries beyond topic, payload, headers and reply topic.

    Every field is None when the publisher did not set it:

    - ``content_type``, ``content_encoding`` (str): MQTT 5 Content Type, AMQP
      content-type / content-encoding; Kafka has neither.
    - ``correlation`` (bytes): MQTT 5 Correlation Data (binary), AMQP
      correlation-id (a short string, kept as its bytes).
    - ``message_id`` (str): AMQP message-id, NATS ``Nats-Msg-Id`` (the id
      JetStream de-duplicates on).
    - ``key`` (bytes): the Kafka record key (partitioning, compaction).
    - ``timestamp`` (int): when the publisher made the message, in ns since
      the epoch (AMQP timestamp, Kafka CreateTime). Not the store's time of
      append, which a stored message keeps apart.
    - ``expiry`` (int): absolute time after which the message is dropped
      undelivered, ns since the epoch (from MQTT 5 Message Expiry Interval
      or AMQP expiration, both relative, made absolute on arrival).
    - ``priority`` (int, 0-255): AMQP priority.
    - ``qos`` (int, 0-2): the publisher's delivery guarantee: MQTT QoS; AMQP
      delivery-mode 1 is 0, 2 (persistent) is 1. A message is durable when
      ``qos`` >= 1.
    - ``type``, ``user_id``, ``app_id`` (str): AMQP type, user-id, app-id.
    - ``utf8`` (bool): MQTT 5 Payload Format Indicator (True: UTF-8 text).

    A Properties object is shared by every delivery of its message: never
    change one after the message is published.
    """

    #: The fields, in the order of their stable numbers in the store record
    #: (records.py numbers them from 1 in this order: only ever append).
    FIELDS = ("content_type", "content_encoding", "correlation", "message_id", "key", "timestamp", "expiry",
              "priority", "qos", "type", "user_id", "app_id", "utf8")

    __slots__ = FIELDS

    def __init__(self, content_type=None, content_encoding=None, correlation=None, message_id=None, key=None,
                 timestamp=None, expiry=None, priority=None, qos=None, type=None, user_id=None, app_id=None,
                 utf8=None):
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.correlation = correlation
        self.message_id = message_id
        self.key = key
        self.timestamp = timestamp
        self.expiry = expiry
        self.priority = priority
        self.qos = qos
        self.type = type
        self.user_id = user_id
        self.app_id = app_id
        self.utf8 = utf8

    @property
    def durable(self) -> bool:
        """True when the publisher asked for at least once (AMQP persistent, MQTT QoS 1 or 2)."""
        return bool(self.qos)

    def items(self):
        """The ``(field, value)`` pairs of the fields that are set, in FIELDS order."""
        return [(name, getattr(self, name)) for name in self.FIELDS if getattr(self, name) is not None]

    def __eq__(self, other):
        if not isinstance(other, Properties):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.FIELDS)

    def __repr__(self):
        return "Properties(%s)" % ", ".join("%s=%r" % pair for pair in self.items())


#: The header of each property, where a protocol has no slot of its own for
#: it: a NATS header line, an MQTT 5 user property, an AMQP or Kafka header
#: (docs/ARCHITECTURE.md, "The message").
PROPERTY_HEADERS = {
    "content_type": "Content-Type",
    "content_encoding": "Content-Encoding",
    "correlation": "FlowMQ-Correlation",
    "message_id": "Nats-Msg-Id",
    "key": "FlowMQ-Key",
    "timestamp": "FlowMQ-Timestamp",
    "expiry": "FlowMQ-Expiry",
    "priority": "FlowMQ-Priority",
    "qos": "FlowMQ-QoS",
    "type": "FlowMQ-Type",
    "user_id": "FlowMQ-User-Id",
    "app_id": "FlowMQ-App-Id",
    "utf8": "FlowMQ-UTF8",
}
