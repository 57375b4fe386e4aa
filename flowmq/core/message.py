"""The protocol-neutral message that every protocol publishes into the core.

Each protocol converts its own frames to a Message on the way in and from a
Message on the way out; nothing in the core looks at protocol details.
"""

from __future__ import annotations


class Message:
    """One published message.

    - ``topic``: the canonical unified topic (``a/b/c``).
    - ``payload``: the body, as bytes, sliced once out of the receive buffer;
      the core passes this one object to every delivery.
    - ``headers``: None, or a tuple of ``(name, value)`` string pairs, in
      order; a name may repeat (NATS and Kafka headers, MQTT 5 user
      properties all allow it).
    - ``reply_to``: None, or the canonical topic where replies go (NATS reply
      subject, MQTT 5 response topic, AMQP reply_to).
    - ``origin``: the consumer object of the connection that published it
      (None for messages made inside the broker), so that a connection that
      asked for no echo does not get its own messages back.
    - ``properties``: None, or the message's less common properties (the
      protocol-neutral fields that MQTT, AMQP and Kafka carry beyond these).
    - ``receipt``: None, or the Receipt of a publisher that waits until every
      destination that keeps the message has stored it.
    - ``wire_cache``: None, or a dict in which protocols keep the encoded
      pieces of this message that every delivery to them reuses (the NATS
      header block, say), keyed by a name each protocol owns.
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
