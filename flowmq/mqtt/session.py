"""An MQTT session: what the broker keeps of one client id, connected or not.

The session, not the connection, is the delivery target of the client's
subscriptions, so that a persistent session (3.1.1 Clean Session 0, MQTT 5
a Session Expiry Interval) keeps receiving while its client is away. It
holds (MQTT-4.1.0-1, 5.0 §4.1):

- the subscriptions, each an ``MqttSubscription`` in the core router with
  its granted QoS and MQTT 5 options;
- the QoS 1 and 2 messages on their way to the client (``inflight``, by
  packet id: sent and not yet acknowledged, or, for QoS 2, PUBREC received
  and PUBCOMP awaited), at most ``max_inflight`` of them (the broker's
  ``mqtt.max_inflight``, or the client's Receive Maximum if lower: 5.0
  §4.9), and those waiting behind them (``queue``, at most ``max_queued``).
  Past half of that, a connected client's connection holds back the
  publishers feeding it until the queue is down to a quarter, while the
  client acknowledges (``MqttConnection.queue_filling``); for an absent
  client or a silent one, what comes beyond max_queued is dropped, as
  mosquitto does;
- the packet ids of the QoS 2 messages the client sent whose PUBREL has
  not come (``awaiting_pubrel``): a PUBLISH that repeats one is not
  published again (5.0 §4.3.3, method B: publish on PUBLISH, remember the
  id until PUBREL).

A message goes to the client once however many of its subscriptions match
it, at the highest QoS among them (each granted the lower of the publish
QoS and the subscription's, MQTT-3.8.4-8), with every matching
Subscription Identifier (5.0 §3.3.4). QoS 0 messages are not kept for an
absent client (mosquitto's default). On reconnection to a kept session the
unacknowledged messages go again, with DUP set, then PUBRELs, in their
original order and with their packet ids (MQTT-4.4.0-1).
"""

from __future__ import annotations

import collections
import time

from zope.interface import implementer

from flowmq.core.interfaces import IDeliveryTarget
from flowmq.core.router import Subscription
from flowmq.logs import logger
from flowmq.mqtt.codec.topics import parse_topic_filter
from flowmq.mqtt.convert import MQTT, expired, publish_qos

log = logger("flowmq.mqtt")

# What an in-flight message waits for.
AWAIT_PUBACK = 1  # QoS 1: PUBACK; QoS 2: PUBREC
AWAIT_PUBCOMP = 2  # QoS 2 after PUBREC: PUBCOMP (the PUBREL is what goes again)

#: Correlation data remembered per response topic (see ``Session.remember_request``).
MAX_CORRELATIONS = 256


class MqttSubscription(Subscription):
    """One MQTT subscription: the core subscription with the MQTT options.

    ``topic_filter`` is the filter as the client wrote it (``$share/g/f``
    included), the key of the session's subscriptions."""

    __slots__ = ("topic_filter", "qos", "retain_as_published", "retain_handling", "identifier")

    def __init__(self, session, topic_filter: str, core_filter: str, group, options, identifier=None):
        Subscription.__init__(self, session, core_filter, group, no_local=options.no_local, wildcard_dollar=False)
        self.topic_filter = topic_filter
        self.qos = options.qos
        self.retain_as_published = options.retain_as_published
        self.retain_handling = options.retain_handling
        self.identifier = identifier


class Outgoing:
    """A QoS 1 or 2 message for the client: in flight (with a packet id) or queued."""

    __slots__ = ("message", "qos", "retain", "identifiers", "packet_id", "state", "seq")

    def __init__(self, message, qos: int, retain: bool, identifiers, seq=None):
        self.message = message
        self.qos = qos
        self.retain = retain
        self.identifiers = identifiers
        self.packet_id = 0
        self.state = AWAIT_PUBACK
        #: Its sequence in the persistent sessions' store (persistence.py), None when not stored.
        self.seq = seq


@implementer(IDeliveryTarget)
class Session:
    """The state of one client id; see the module docstring."""

    protocol = MQTT
    echo = True

    def __init__(self, client_id: str, max_inflight: int, max_queued: int):
        self.client_id = client_id
        #: The MqttConnection of the client while it is connected.
        self.connection = None
        #: The logged-in user's Permissions, None when unrestricted.
        self.permissions = None
        #: Kept after the connection ends (for ``expiry`` seconds, None: for ever).
        self.persistent = False
        self.expiry = 0
        self.subscriptions: dict = {}  # topic filter as written -> MqttSubscription
        self.inflight: collections.OrderedDict = collections.OrderedDict()  # packet id -> Outgoing
        self.queue = collections.deque()  # Outgoing without a packet id yet
        self.awaiting_pubrel: set = set()
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        #: The persistent sessions' store (persistence.SessionStore) while this one is persistent.
        self.store = None
        self.dropped = 0
        self._next_id = 1
        self._correlations: collections.OrderedDict = collections.OrderedDict()

    def __repr__(self):
        return "<Session %r>" % self.client_id

    # -- IDeliveryTarget --------------------------------------------------------

    def deliver(self, message, subscriptions) -> None:
        """A message that matches ``subscriptions``: to the client once, at
        the highest QoS granted among them, with their identifiers."""
        properties = message.properties
        if properties is not None and properties.expiry is not None and properties.expiry <= time.time_ns():
            return  # expired on its way (5.0 §3.3.2.3.3)
        top = 0  # the highest QoS among the subscriptions
        retain = False
        identifiers = None
        for subscription in subscriptions:
            if subscription.qos > top:
                top = subscription.qos
            if subscription.retain_as_published and getattr(message, "retain", False):
                retain = True
            if subscription.identifier:
                if identifiers is None:
                    identifiers = [subscription.identifier]
                else:
                    identifiers.append(subscription.identifier)
        if not top:
            if self.connection is not None:  # QoS 0: to a connected client only
                self.connection.send_publish(message, 0, retain, identifiers, None, False)
            return
        # Each subscription grants the lower of its QoS and the publish's, the highest of those wins.
        published = publish_qos(message)
        self.send(message, top if published is None or published > top else published, retain, identifiers)

    def deliver_run(self, run, subscriptions) -> None:
        for message in run:
            self.deliver(message, subscriptions)

    def send(self, message, qos: int, retain: bool = False, identifiers=None) -> None:
        """Send, keep in flight, queue or drop one message for the client."""
        connection = self.connection
        if not qos:
            if connection is not None:
                connection.send_publish(message, 0, retain, identifiers, None, False)
            return
        outgoing = Outgoing(message, qos, retain, identifiers)
        if connection is not None and not self.queue and len(self.inflight) < self.max_inflight:
            self._keep(outgoing)
            self._send_new(outgoing)
        elif len(self.queue) < self.max_queued or (connection is not None and connection.holds(message.origin)):
            # Kept past max_queued for a publisher held back already: the
            # rest of a run it sent before the hold (Broker.publish_run).
            self._keep(outgoing)
            self.queue.append(outgoing)
            if connection is not None and len(self.queue) >= self.max_queued // 2:
                connection.queue_filling(message.origin)
        else:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warn("MQTT session {client}: {n} message(s) dropped, its queue is full ({max})",
                         client=self.client_id, n=self.dropped, max=self.max_queued)

    def _keep(self, outgoing: Outgoing) -> None:
        if self.store is not None:
            outgoing.seq = self.store.keep(self, outgoing.message, outgoing.qos)

    def _release(self, outgoing: Outgoing) -> None:
        if outgoing.seq is not None:
            if self.store is not None:
                self.store.release(outgoing.seq)
            outgoing.seq = None

    def _send_new(self, outgoing: Outgoing) -> None:
        packet_id = self._free_packet_id()
        outgoing.packet_id = packet_id
        self.inflight[packet_id] = outgoing
        self.connection.send_publish(outgoing.message, outgoing.qos, outgoing.retain, outgoing.identifiers,
                                     packet_id, False)

    def _free_packet_id(self) -> int:
        """The next packet id not in flight (1..65535, MQTT-2.2.1-3)."""
        packet_id = self._next_id
        while packet_id in self.inflight:
            packet_id = packet_id % 65535 + 1
        self._next_id = packet_id % 65535 + 1
        return packet_id

    def _drain(self) -> None:
        """Send queued messages while there is room in flight."""
        queue = self.queue
        now = None
        while queue and self.connection is not None and len(self.inflight) < self.max_inflight:
            outgoing = queue.popleft()
            if outgoing.message.properties is not None:
                now = now or time.time_ns()
                if expired(outgoing.message, now):
                    self._release(outgoing)
                    continue
            self._send_new(outgoing)
        if self.connection is not None and len(queue) <= self.max_queued // 4:
            self.connection.queue_drained()

    # -- the client's acknowledgements -------------------------------------------------

    def acknowledged(self, packet_id: int) -> bool:
        """PUBACK (QoS 1); False if nothing of that id waited for it."""
        outgoing = self.inflight.get(packet_id)
        if outgoing is None or outgoing.qos != 1:
            return False
        del self.inflight[packet_id]
        self._release(outgoing)
        self._drain()
        return True

    def received(self, packet_id: int, failed: bool = False) -> bool:
        """PUBREC (QoS 2): the PUBREL goes next, unless the client refused
        the message (a v5 reason of 0x80 or more ends it: 5.0 §4.3.3)."""
        outgoing = self.inflight.get(packet_id)
        if outgoing is None or outgoing.qos != 2:
            return False
        self._release(outgoing)  # the client has it: only the packet id is kept (in memory)
        if failed:
            del self.inflight[packet_id]
            self._drain()
        else:
            outgoing.state = AWAIT_PUBCOMP
            outgoing.message = None
        return True

    def completed(self, packet_id: int) -> bool:
        """PUBCOMP (QoS 2 done); False if no PUBREL of that id waited for it."""
        outgoing = self.inflight.get(packet_id)
        if outgoing is None or outgoing.state != AWAIT_PUBCOMP:
            return False
        del self.inflight[packet_id]
        self._drain()
        return True

    # -- the connection --------------------------------------------------------------

    def attach(self, connection, max_inflight: int) -> None:
        """The client (re)connected: resend what is in flight (DUP, same
        packet ids, in order; PUBRELs for QoS 2 past PUBREC), then the queue."""
        self.connection = connection
        self.permissions = connection.permissions
        self.max_inflight = max_inflight
        for outgoing in list(self.inflight.values()):
            if outgoing.state == AWAIT_PUBCOMP:
                connection.send_pubrel(outgoing.packet_id)
            else:
                connection.send_publish(outgoing.message, outgoing.qos, outgoing.retain, outgoing.identifiers,
                                        outgoing.packet_id, True)
        self._drain()

    def detach(self) -> None:
        self.connection = None

    def holdable(self):
        """The connection to hold back for a message the session's client
        published (it is the message's origin): the one it has now."""
        return self.connection

    def restore(self, queued, state=None) -> None:
        """What the store kept for this session (``(seq, message, qos)``, in
        order) waits for the client again. ``state`` is what a graceful stop
        wrote of ``delivery_state()``: the messages that were in flight go
        again under their packet ids (DUP), PUBRELs where PUBCOMP was
        awaited, and the client's QoS 2 ids awaiting PUBREL stay answered
        only; without it (a crash) the stored messages go with new ids."""
        by_seq = {seq: Outgoing(message, qos, False, None, seq) for seq, message, qos in queued}
        for entry in (state or {}).get("inflight", ()):
            packet_id = entry[1]
            if entry[0] == "pubrel":
                outgoing = Outgoing(None, 2, False, None)
                outgoing.state = AWAIT_PUBCOMP
            else:
                outgoing = by_seq.pop(entry[2], None)
                if outgoing is None:  # acknowledged after all (the store released it)
                    continue
                outgoing.retain, outgoing.identifiers = entry[3], entry[4]  # the PUBLISH goes again as it went
            outgoing.packet_id = packet_id
            self.inflight[packet_id] = outgoing
        self.queue.extend(by_seq.values())  # in order: dicts keep it
        self.awaiting_pubrel.update((state or {}).get("awaiting_pubrel", ()))

    def delivery_state(self) -> dict:
        """The packet ids of the session's QoS 1/2 exchanges (kept in memory
        while the broker runs) for ``restore`` after a graceful stop: the
        in-flight messages (by their store sequence) and PUBRELs, in order,
        and the ids of the client's QoS 2 PUBLISHes whose PUBREL has not come."""
        inflight = []
        for packet_id, outgoing in self.inflight.items():
            if outgoing.state == AWAIT_PUBCOMP:
                inflight.append(["pubrel", packet_id])
            elif outgoing.seq is not None:
                inflight.append(["publish", packet_id, outgoing.seq, outgoing.retain, outgoing.identifiers])
        return {"inflight": inflight, "awaiting_pubrel": sorted(self.awaiting_pubrel)}

    def subscribe(self, broker, topic_filter: str, options, identifier=None):
        """Subscribe (or replace the subscription of) ``topic_filter``:
        ``(subscription, replaced an existing one)``. Raises what
        ``parse_topic_filter`` and ``broker.subscribe`` raise
        (TopicFilterInvalid, PermissionDenied, InvalidTopic)."""
        group, core_filter = parse_topic_filter(topic_filter)
        old = self.subscriptions.get(topic_filter)
        subscription = MqttSubscription(self, topic_filter, core_filter, group, options, identifier)
        broker.subscribe(subscription)
        if old is not None:  # replaces the existing one (MQTT-3.8.4-3)
            broker.unsubscribe(old)
        self.subscriptions[topic_filter] = subscription
        return subscription, old is not None

    def clear_delivery_state(self) -> None:
        """A new session in place of this one's state (Clean Start)."""
        for outgoing in list(self.inflight.values()) + list(self.queue):
            self._release(outgoing)
        self.inflight.clear()
        self.queue.clear()
        self.awaiting_pubrel.clear()
        self._correlations.clear()

    # -- requests from MQTT 5 clients ---------------------------------------------------

    def remember_request(self, response_topic: str, correlation: bytes) -> None:
        """The client sent a request: an answer on ``response_topic`` that
        lost its correlation data (a NATS responder's reply has none) gets
        this one back. Bounded, the oldest forgotten first."""
        correlations = self._correlations
        correlations[response_topic] = correlation
        correlations.move_to_end(response_topic)
        if len(correlations) > MAX_CORRELATIONS:
            correlations.popitem(last=False)

    def correlation_for(self, message):
        """The correlation data to add to ``message`` for this client, or None."""
        if not self._correlations:
            return None
        properties = message.properties
        if properties is not None and properties.correlation is not None:
            return None
        return self._correlations.get(message.topic)
