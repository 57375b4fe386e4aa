"""The MQTT server protocol, 3.1 (level 3), 3.1.1 (level 4) and 5.0 (level 5).

One ``MqttConnection`` per network connection. It feeds bytes to the codec's
``Decoder`` (flowmq/mqtt/codec), acts on the packets, and speaks to the core
through its session (session.py: the delivery target of the client's
subscriptions, kept across connections) and the shared ``MqttService``
(service.py: sessions by client id, retained messages, Wills).

What the connection base (flowmq/connection.py) does for every protocol is
not repeated here: the connection limit, TLS and its timeout, the login
through the twisted.cred portal and its timeout, the output queue, slow
consumers and the graceful close. MQTT's own:

- CONNECT first (MQTT-3.1.0-1), once (MQTT-3.1.0-2); its client id rules
  (an empty id: assigned in 5.0, refused with 0x02 in 3.1.1 unless the
  session is clean, MQTT-3.1.3-7/8); the login with user name and password,
  or the password alone as a token, or the TLS client certificate;
- the keep alive: no packet for 1.5 times the keep alive closes the
  connection (MQTT-3.1.2-24), as a connection that ended abnormally (its
  Will goes); ``mqtt.max_keepalive`` caps it (5.0 Server Keep Alive).
  Before its CONNECT a connection has ``ping_interval`` (the [limits] key,
  which MQTT, with no server ping, uses for nothing else) to send it;
- PUBLISH in both directions at QoS 0, 1 and 2 (4.3): the broker answers
  a QoS 1 or 2 PUBLISH once every destination that keeps it has stored it
  (the message's receipt), and in the order the PUBLISHes came
  (MQTT-4.6.0-2/3); QoS 2 publishes at PUBLISH and remembers the packet id
  until PUBREL, so a repeated PUBLISH is not published twice; a v5 client
  may have at most the CONNACK's Receive Maximum of them unanswered by
  PUBACK or PUBCOMP (5.0 §3.3.4: one more is DISCONNECT 0x93);
- topic aliases from the client (5.0 §3.3.2.3.4), up to
  ``mqtt.topic_alias_maximum``;
- SUBSCRIBE/UNSUBSCRIBE with each filter answered on its own (SUBACK 0x80
  in 3.1.1, the reason code in 5.0), ``$share/<group>/<filter>`` as a
  member of the core queue group ``<group>``, retained messages on
  subscribe (Retain Handling 0/1/2, 5.0 §3.8.3.1);
- errors: in 5.0 a DISCONNECT with the codec's reason code, then the close;
  in 3.1/3.1.1 the close (4.8). A refused publish is dropped (3.1.1) or
  answered with 0x87 (5.0), and the connection stays.
"""

from __future__ import annotations

import collections
import os

from twisted.cred.credentials import UsernamePassword
from zope.interface import implementer

from flowmq.auth.credentials import TokenCredentials
from flowmq.connection import (
    CLOSE_LOGIN_REFUSED, CLOSE_SHUTDOWN, CLOSE_SLOW_CONSUMER, CLOSE_STALE, PAYLOAD_PIECE_AT, BrokerConnection,
)
from flowmq.core.errors import PermissionDenied
from flowmq.core.interfaces import IDeliveryTarget
from flowmq.core.receipts import Receipt
from flowmq.core.topics import InvalidTopic
from flowmq.listener import ConnectionRegistry
from flowmq.logs import logger
from flowmq.mqtt import codec
from flowmq.mqtt.codec import packets as P
from flowmq.mqtt.codec import reasons as R
from flowmq.mqtt.codec.errors import ReceiveMaximumExceeded
from flowmq.mqtt.codec.topics import SHARE_PREFIX, parse_topic_filter, topic_name_error
from flowmq.mqtt.convert import MQTT, from_mqtt, properties_block

#: What a connection may send before its CONNECT is read (the CONNECT itself included).
MAX_CONNECT_SIZE = 64 * 1024
#: A keep alive is enforced at 1.5 times its value (MQTT-3.1.2-24).
KEEPALIVE_GRACE = 1.5

#: A Reason String is cut to this many characters (it may quote what the client sent).
_MAX_REASON_STRING = 256

# The MQTT 5 DISCONNECT reason of each way the connection base closes a client.
_FAREWELL_REASONS = {CLOSE_SLOW_CONSUMER: R.QUOTA_EXCEEDED, CLOSE_STALE: R.KEEP_ALIVE_TIMEOUT,
                     CLOSE_SHUTDOWN: R.SERVER_SHUTTING_DOWN}


@implementer(IDeliveryTarget)
class MqttConnection(BrokerConnection):
    """One MQTT client connection; see the module docstring."""

    log = logger("flowmq.mqtt")
    protocol = MQTT

    def __init__(self, factory: "MqttFactory"):
        BrokerConnection.__init__(self, factory)
        settings = factory.settings
        self.settings = settings
        self.service = factory.service
        self.decoder = codec.Decoder(settings.max_packet_size, min(MAX_CONNECT_SIZE, settings.max_packet_size))
        self.level = None  # the protocol level, once CONNECT is read
        self.session = None  # the cred avatar (BrokerConnection's); the MQTT session is ``mqtt_session``
        self.mqtt_session = None
        self.connect = None
        self.will = None  # the Will Message (a core message) and its delay, until a normal DISCONNECT
        self.will_delay = 0
        self.keep_alive = 0
        self.max_packet_out = None  # the client's Maximum Packet Size (5.0), None: no limit
        self._aliases: dict = {}  # topic alias -> topic, from the client
        self._aliases_out: dict = {}  # topic -> topic alias, to the client
        self._alias_max_out = 0  # the client's Topic Alias Maximum (5.0 §3.1.2.11.5)
        # Packets read and not handled yet: while the login is decided, and
        # while a subscriber's full queue holds this publisher back.
        self._waiting = None
        self._last_read = 0.0
        self._keepalive_call = None
        self._answers = collections.deque()  # [bytes or None] PUBACK/PUBREC in PUBLISH order
        self._receiving: set = set()  # v5: ids of QoS 1/2 PUBLISHes not yet answered by PUBACK/PUBCOMP
        self._closed = False
        self._problem_information = True  # v5 Request Problem Information: Reason Strings on acknowledgements
        self._acks = 0  # PUBACKs, PUBRECs and PUBCOMPs from the client
        self._acks_seen = 0  # ... at the last look while holding publishers for the queue
        self._acks_at_stall = -1  # ... when it was found not acknowledging (holds nobody until the next)
        self._progress_call = None

    # -- the connection base's hooks ---------------------------------------------

    def connectionMade(self):
        BrokerConnection.connectionMade(self)
        if not self._closing:
            self._keepalive_call = self.clock.callLater(self._limits.ping_interval, self._no_connect)

    def _no_connect(self) -> None:
        """No CONNECT within ping_interval: closed (mosquitto: after 90 s)."""
        self._keepalive_call = None
        self.log.info("[cid {cid}] {peer}: no CONNECT in {s} s: closing", cid=self.client_id, peer=self.peer,
                      s=self._limits.ping_interval)
        self.close_for(CLOSE_STALE)

    def stop_consuming(self) -> None:
        """The connection ends: its session ends or stays; the Will goes unless DISCONNECT said not."""
        if self._closed:
            return
        self._closed = True
        self._stop_keepalive()
        if self._progress_call is not None and self._progress_call.active():
            self._progress_call.cancel()
        session = self.mqtt_session
        if session is None or session.connection is not self:
            return  # not connected yet, or taken over (the new connection has the session)
        will, self.will = self.will, None
        persistent, expiry = session.persistent, session.expiry
        self.service.connection_ended(session)
        if will is not None:
            self.service.will(session.client_id, will, self.will_delay, persistent, expiry)

    def farewell(self, reason: str) -> bytes:
        if self.level is None:
            return b""  # before CONNECT: the close says it
        if reason == CLOSE_LOGIN_REFUSED:
            code = R.BAD_USER_NAME_OR_PASSWORD if self.level == P.MQTT_5 else 0x04  # the same, in 3.1.1
            return self._with_reason(P.Connack(False, code), "login refused")
        if self.level == P.MQTT_5 and reason in _FAREWELL_REASONS:
            return self._with_reason(P.Disconnect(_FAREWELL_REASONS[reason]), reason)
        return b""

    def _with_reason(self, packet, text: str, level=None) -> bytes:
        """``packet`` (a CONNACK, DISCONNECT, PUBACK or PUBREC that reports a
        problem) encoded at ``level`` (the connection's by default), in MQTT
        5 with ``text`` as its Reason String, the diagnostic for people
        (5.0 §3.2.2.3.9, §3.4.2.2.2, §3.5.2.2.2, §3.14.2.2.3). Not on a PUBACK
        or PUBREC when the client asked for no problem information
        (MQTT-3.1.2-29), nor when it would take the packet over the client's
        Maximum Packet Size (MQTT-3.2.2-19, -3.4.2-2, -3.5.2-2, -3.14.2-3)."""
        level = self.level if level is None else level
        if level == P.MQTT_5 and (self._problem_information or packet.TYPE in (P.CONNACK, P.DISCONNECT)):
            packet.properties = {"reason_string": text[:_MAX_REASON_STRING]}
            data = codec.encode(packet, level)
            if self.max_packet_out is None or len(data) <= self.max_packet_out:
                return data
            packet.properties = P.NO_PROPERTIES
        return codec.encode(packet, level)

    def logged_in(self) -> None:
        self._accept(self.connect)
        waiting, self._waiting = self._waiting, None
        self._take(waiting or ())

    # -- input ------------------------------------------------------------------------

    def dataReceived(self, data: bytes):
        if self._closing:
            return  # what a half-closed connection still reads is dropped
        self._last_read = self.clock.seconds()
        try:
            packets = self.decoder.feed(data)
        except codec.CodecError as error:
            self._take(error.packets)
            if not self._closing:
                self._refuse(error)
            return
        self._take(packets)

    def _take(self, packets) -> None:
        """Handle the packets one read completed, in order (the hot path: no call between)."""
        for packet in packets:
            if self._closing:
                return
            if self._waiting is not None:  # a login is under way: after it
                self._waiting.append(packet)
                continue
            try:
                _HANDLERS[packet.TYPE](self, packet)
            except codec.CodecError as error:
                self._refuse(error)
            except Exception:  # a fault of ours: this client's connection goes, the broker stays
                self.log.failure("[cid {cid}] {peer}: handling {packet!r} failed", cid=self.client_id,
                                 peer=self.peer, packet=type(packet).__name__)
                if self.level == P.MQTT_5 and self.mqtt_session is not None:
                    self.send(self._with_reason(P.Disconnect(R.IMPLEMENTATION_SPECIFIC_ERROR), "server error"))
                self.close_gracefully()

    def _refuse(self, error) -> None:
        """A packet the spec says ends the connection: the reason (a CONNACK
        during CONNECT, a v5 DISCONNECT once connected: not while the login
        is decided, before any CONNACK, MQTT-3.2.0-1), then the close."""
        self.log.info("[cid {cid}] {peer}: MQTT protocol error: {why}", cid=self.client_id, peer=self.peer,
                      why=error.reason)
        if self.connect is None and error.connack_level is not None:
            self.send(self._with_reason(P.Connack(False, error.connack_code), error.reason, error.connack_level))
        elif self.level == P.MQTT_5 and self.mqtt_session is not None:
            self.send(self._with_reason(P.Disconnect(error.reason_code), error.reason))
            # The client may still be sending (answering what came before): it reads
            # the DISCONNECT rather than a reset (the Paho suite's test_flow_control2).
            self.close_gracefully(half=True)
            return
        self.close_gracefully()

    # -- CONNECT ---------------------------------------------------------------------

    def _on_connect(self, packet) -> None:
        if self.connect is not None:
            raise codec.ProtocolError("a second CONNECT (MQTT-3.1.0-2)")
        self._stop_keepalive()  # the wait for CONNECT (the keep alive starts once accepted)
        self.level = packet.protocol_level
        if packet.will is not None:
            error = topic_name_error(packet.will.topic)
            if error is not None:  # v5: a CONNACK says so; 3.1.1 has no code for it
                raise codec.TopicNameInvalid("Will topic: " + error,
                                             P.MQTT_5 if self.level == P.MQTT_5 else None)
        self.connect = packet
        client_id = packet.client_id
        if not client_id and (not packet.clean_start and self.level != P.MQTT_5 or self.level == P.MQTT_3_1):
            # MQTT-3.1.3-8: an empty id needs a clean session (3.1.1); 3.1 needs an id.
            self._connack_refused(0x02, R.CLIENT_IDENTIFIER_NOT_VALID, "an empty client id needs a clean session")
            return
        if self.level == P.MQTT_5 and "authentication_method" in packet.properties:
            # Enhanced authentication (5.0 §4.12) is not supported: Bad authentication method.
            self._connack_refused(0x05, R.BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported")
            return
        if self.factory.security.portal is not None:
            self._waiting = []
            credentials, who = self._credentials(packet)
            self.log_in(credentials, who)
            return
        self._accept(packet)

    def _credentials(self, packet):
        """User name and password, else the password alone (no or an empty
        user name: 3.1.1 needs one with a password) as a token, else the TLS
        client certificate: what CONNECT offers, and who it names."""
        if packet.username and packet.password is not None:
            return UsernamePassword(packet.username.encode("utf-8"), packet.password), "user %r" % packet.username
        if packet.password is not None:
            try:
                return TokenCredentials(packet.password.decode("utf-8")), "a token"
            except UnicodeDecodeError:
                return None, "a token that is not UTF-8"
        certificate = self.certificate_credentials()
        if certificate is not None:
            return certificate
        return None, "no credentials" if not packet.username else "user %r without a password" % packet.username

    def _connack_refused(self, code_3, code_5, why: str) -> None:
        code = code_5 if self.level == P.MQTT_5 else code_3
        self.send(self._with_reason(P.Connack(False, code), why))
        self.close_gracefully()

    def _accept(self, packet) -> None:
        """The client may connect: its session, the CONNACK, then what the session kept."""
        level = self.level
        properties = packet.properties
        client_id = packet.client_id
        assigned = None
        if not client_id:
            client_id = assigned = "flowmq-" + os.urandom(12).hex()
        if level == P.MQTT_5:
            expiry = properties.get("session_expiry_interval", 0)
            persistent = expiry > 0
            expiry = None if expiry == 0xFFFFFFFF else expiry
            receive_maximum = properties.get("receive_maximum", 65535)
            self.max_packet_out = properties.get("maximum_packet_size")
            self._problem_information = properties.get("request_problem_information", 1) == 1
            self._alias_max_out = properties.get("topic_alias_maximum", 0)
        else:
            persistent = not packet.clean_start
            expiry = None
            receive_maximum = 65535
        if packet.will is not None:
            will = packet.will
            self.will = from_mqtt(will, self, will.retain)
            self.will_delay = will.properties.get("will_delay_interval", 0)
        max_keepalive = self.settings.max_keepalive
        keep_alive = packet.keep_alive
        server_keep_alive = None
        if keep_alive > max_keepalive or (keep_alive == 0 and max_keepalive < 65535):
            keep_alive = server_keep_alive = max_keepalive
        self.keep_alive = keep_alive
        session, present = self.service.open_session(self, client_id, packet.clean_start, persistent, expiry)
        self.mqtt_session = session
        connack = {}
        if level == P.MQTT_5:
            if assigned is not None:
                connack["assigned_client_identifier"] = assigned
            if server_keep_alive is not None:
                connack["server_keep_alive"] = server_keep_alive
            connack["topic_alias_maximum"] = self.settings.topic_alias_maximum
            connack["maximum_packet_size"] = self.settings.max_packet_size
            connack["receive_maximum"] = self.settings.max_inflight
        self.send(codec.encode(P.Connack(present, 0, connack or P.NO_PROPERTIES), level))
        self.log.debug("[cid {cid}] MQTT {version} client {client} connected{present}", cid=self.client_id,
                       version=_LEVEL_NAMES[level], client=client_id, present=" (session present)" if present else "")
        self._start_keepalive()
        session.attach(self, min(self.settings.max_inflight, receive_maximum))

    # -- keep alive ---------------------------------------------------------------------

    def _start_keepalive(self) -> None:
        if self.keep_alive:
            self._keepalive_call = self.clock.callLater(self.keep_alive * KEEPALIVE_GRACE, self._check_alive)

    def _check_alive(self) -> None:
        self._keepalive_call = None
        quiet = self.clock.seconds() - self._last_read
        limit = self.keep_alive * KEEPALIVE_GRACE
        if self._held_by:  # not read because we hold it back: its PINGREQs wait in the socket
            quiet = 0.0
        if quiet >= limit:
            self.log.info("[cid {cid}] {peer}: nothing for {s:.1f} s, keep alive {ka} s: closing",
                          cid=self.client_id, peer=self.peer, s=quiet, ka=self.keep_alive)
            self.close_for(CLOSE_STALE)
            return
        self._keepalive_call = self.clock.callLater(limit - quiet, self._check_alive)

    def _stop_keepalive(self) -> None:
        if self._keepalive_call is not None and self._keepalive_call.active():
            self._keepalive_call.cancel()
        self._keepalive_call = None

    def _on_pingreq(self, packet) -> None:
        self.send(_PINGRESP)

    # -- PUBLISH from the client ----------------------------------------------------------

    def _on_publish(self, packet) -> None:
        # (The decoder refused an empty topic name without a Topic Alias, MQTT-4.7.3-1, 5.0 §3.3.2.1.)
        if packet.properties is not P.NO_PROPERTIES:  # MQTT 5 only
            self._resolve_alias(packet)
        if len(packet.payload) > self.settings.max_payload:
            raise codec.PacketTooLarge("a payload of %d bytes, over max_payload %d"
                                       % (len(packet.payload), self.settings.max_payload))
        qos = packet.qos
        packet_id = packet.packet_id
        session = self.mqtt_session
        if qos == 2 and packet_id in session.awaiting_pubrel:
            self._answer_now(P.Pubrec(packet_id))  # a repeat: published already (5.0 §4.3.3)
            return
        if qos and self.level == P.MQTT_5:
            if len(self._receiving) >= self.settings.max_inflight:  # the CONNACK's Receive Maximum
                raise ReceiveMaximumExceeded("more than %d QoS 1 and 2 PUBLISHes unanswered (5.0 §3.3.4)"
                                             % self.settings.max_inflight)
            self._receiving.add(packet_id)
        message = from_mqtt(packet, session, packet.retain)
        if self.level == P.MQTT_5 and message.reply_to is not None and message.properties is not None \
                and message.properties.correlation is not None:
            session.remember_request(message.reply_to, message.properties.correlation)
        answer = None
        if qos:
            message.receipt = Receipt()
            answer = [None]
            self._answers.append(answer)
        try:
            self.service.publish(message)
        except PermissionDenied:
            self.log.info("[cid {cid}] {peer}: publish to {topic} denied", cid=self.client_id, peer=self.peer,
                          topic=message.topic)
            if qos:
                code = R.NOT_AUTHORIZED if self.level == P.MQTT_5 else 0
                self._answered(answer, self._ack_for(qos, packet_id, code, "not authorized to publish to "
                                                     + message.topic))
            return
        except InvalidTopic as error:
            raise codec.TopicNameInvalid(str(error))
        if not qos:
            return
        if qos == 2:
            session.awaiting_pubrel.add(packet_id)
        if message.receipt.stored:  # nothing durable took it, or it is stored already
            self._stored(None, answer, qos, packet_id)
        else:
            message.receipt.result().addBoth(self._stored, answer, qos, packet_id)

    def _resolve_alias(self, packet) -> None:
        """5.0 §3.3.2.3.4: a Topic Alias sets (with a topic) or stands for (without one) a topic."""
        alias = packet.properties.get("topic_alias")
        if alias is None:
            return
        if alias > self.settings.topic_alias_maximum:
            raise codec.TopicAliasInvalid("topic alias %d above the maximum %d"
                                          % (alias, self.settings.topic_alias_maximum))
        if packet.topic:
            self._aliases[alias] = packet.topic
        else:
            topic = self._aliases.get(alias)
            if topic is None:
                raise codec.ProtocolError("topic alias %d was never set" % alias)
            packet.topic = topic

    def _stored(self, result, answer, qos: int, packet_id: int) -> None:
        """The publish receipt completed: PUBACK/PUBREC, with an error reason (5.0) if a store failed."""
        code = 0
        if result is not None:  # a Failure: a store refused or could not write it
            self.log.info("[cid {cid}] {peer}: a publish was not stored: {why}", cid=self.client_id,
                          peer=self.peer, why=result.getErrorMessage())
            code = R.UNSPECIFIED_ERROR if self.level == P.MQTT_5 else 0
        why = "not stored: " + result.getErrorMessage() if result is not None else ""
        self._answered(answer, self._ack_for(qos, packet_id, code, why))

    def _ack_for(self, qos: int, packet_id: int, code: int, why: str = "") -> bytes:
        packet = P.Puback(packet_id, code) if qos == 1 else P.Pubrec(packet_id, code)
        if qos == 1 or code >= 0x80:
            self._receiving.discard(packet_id)  # answered: its place under the Receive Maximum is free
        if qos == 2 and code >= 0x80:
            self.mqtt_session.awaiting_pubrel.discard(packet_id)  # refused: no PUBREL follows (5.0 §4.3.3)
        return self._with_reason(packet, why) if code >= 0x80 else codec.encode(packet, self.level)

    def _answered(self, answer, data: bytes) -> None:
        """One answer is ready; send those at the front that are (MQTT-4.6.0-2: in PUBLISH order)."""
        answer[0] = data
        answers = self._answers
        while answers and answers[0][0] is not None:
            self.send(answers.popleft()[0])

    def _answer_now(self, packet) -> None:
        data = codec.encode(packet, self.level)
        if self._answers:
            self._answers.append([data])
        else:
            self.send(data)

    def _on_pubrel(self, packet) -> None:
        session = self.mqtt_session
        self._receiving.discard(packet.packet_id)
        if packet.packet_id in session.awaiting_pubrel:
            session.awaiting_pubrel.discard(packet.packet_id)
            self._answer_now(P.Pubcomp(packet.packet_id))
        else:
            self._answer_now(P.Pubcomp(packet.packet_id, R.PACKET_IDENTIFIER_NOT_FOUND
                                       if self.level == P.MQTT_5 else 0))

    # -- acknowledgements from the client ------------------------------------------------

    def _on_puback(self, packet) -> None:
        if self.mqtt_session.acknowledged(packet.packet_id):
            self._acks += 1

    def _on_pubrec(self, packet) -> None:
        session = self.mqtt_session
        if session.received(packet.packet_id, packet.reason_code >= 0x80):
            self._acks += 1
            if packet.reason_code < 0x80:
                self.send_pubrel(packet.packet_id)
        elif packet.reason_code < 0x80:
            self.send(codec.encode(P.Pubrel(packet.packet_id, R.PACKET_IDENTIFIER_NOT_FOUND
                                            if self.level == P.MQTT_5 else 0), self.level))

    def _on_pubcomp(self, packet) -> None:
        if self.mqtt_session.completed(packet.packet_id):
            self._acks += 1

    # -- flow control: publishers held back while the session's queue is long -------------

    def hold_input(self, holder) -> None:
        """Held back: reading stops, and so does the handling of the packets
        of the read under way (a whole read can hold thousands of PUBLISHes)."""
        BrokerConnection.hold_input(self, holder)
        if self._waiting is None and not self._closing:
            self._waiting = []

    def input_released(self) -> None:
        self._last_read = self.clock.seconds()  # what it sent while held counts as just read
        waiting, self._waiting = self._waiting, None
        self._take(waiting or ())

    def queue_filling(self, publisher) -> None:
        """The session's queue of QoS 1 and 2 messages is past the hold mark
        (half of mqtt.max_queued): hold ``publisher`` back until the client's
        acknowledgements drain it, so that nothing is dropped. Every
        stall_deadline the publishers get one read (their PINGREQs are
        answered) and are held again if the queue is still long.

        Not while the client has stopped acknowledging (nothing for
        stall_deadline): then what comes past max_queued is dropped, as
        mosquitto does, rather than the topic held up for everybody. Not
        while this connection is held itself: it reads none of its
        client's acknowledgements then, and two clients publishing to each
        other would hold each other for ever."""
        if self._held_by or self._acks == self._acks_at_stall or not self.hold(publisher):
            return
        if self._progress_call is None:
            self._acks_seen = self._acks
            self._progress_call = self.clock.callLater(self._limits.stall_deadline, self._check_progress)

    def queue_drained(self) -> None:
        """The queue is down to the release mark: the publishers go on."""
        if self._holding:
            self._release_publishers()

    def _check_progress(self) -> None:
        self._progress_call = None
        if not self._holding:
            return
        if self._acks == self._acks_seen:
            self.log.info("[cid {cid}] {peer}: no acknowledgement for {s} s with {n} messages queued: its "
                          "publishers go on, messages past mqtt.max_queued are dropped", cid=self.client_id,
                          peer=self.peer, s=self._limits.stall_deadline, n=len(self.mqtt_session.queue))
            self._acks_at_stall = self._acks
        self._release_publishers()

    # -- SUBSCRIBE and UNSUBSCRIBE ----------------------------------------------------------

    def _on_subscribe(self, packet) -> None:
        session = self.mqtt_session
        identifier = packet.properties.get("subscription_identifier")
        if identifier:
            identifier = identifier[0]
        codes = []
        retained = []
        for topic_filter, options in packet.subscriptions:
            code, subscription, existed = self._subscribe(session, topic_filter, options, identifier)
            codes.append(code)
            if subscription is not None and subscription.group is None:
                # Retain Handling: 0 send, 1 only for a new subscription, 2 never (5.0 §3.8.3.1).
                if options.retain_handling == 0 or (options.retain_handling == 1 and not existed):
                    retained.append(subscription)
        self.send(codec.encode(P.Suback(packet.packet_id, codes), self.level))
        self.service.subscriptions_changed(session)
        for subscription in retained:
            self._send_retained(session, subscription)

    def _subscribe(self, session, topic_filter: str, options, identifier):
        """One filter of a SUBSCRIBE: ``(reason code, subscription or None, replaced an existing one)``."""
        v5 = self.level == P.MQTT_5
        if topic_filter not in session.subscriptions and len(session.subscriptions) >= self.settings.max_subscriptions:
            self.log.info("[cid {cid}] {peer}: subscription to {filter} refused: {n} subscriptions already",
                          cid=self.client_id, peer=self.peer, filter=topic_filter, n=len(session.subscriptions))
            return (R.QUOTA_EXCEEDED if v5 else 0x80), None, False
        if options.no_local and topic_filter.startswith(SHARE_PREFIX):
            # 5.0 §3.8.3.1: No Local on a shared subscription is a Protocol Error.
            raise codec.ProtocolError("No Local on a shared subscription")
        try:
            subscription, existed = session.subscribe(self.broker, topic_filter, options, identifier)
        except (codec.TopicFilterInvalid, InvalidTopic):
            return (R.TOPIC_FILTER_INVALID if v5 else 0x80), None, False
        except PermissionDenied:
            self.log.info("[cid {cid}] {peer}: subscription to {filter} denied", cid=self.client_id,
                          peer=self.peer, filter=topic_filter)
            return (R.NOT_AUTHORIZED if v5 else 0x80), None, False
        return options.qos, subscription, existed

    def _send_retained(self, session, subscription) -> None:
        for message in self.service.retained.matching(subscription.filter):  # no `$` topics for `+`/`#` first
            if self.permissions is not None and not self.permissions.may_receive(message.topic):
                continue
            qos = message.properties.qos if message.properties is not None and message.properties.qos else 0
            qos = min(qos, subscription.qos)
            # MQTT-3.3.1-8: retained messages sent for a new subscription have RETAIN set.
            session.send(message, qos, True, [subscription.identifier] if subscription.identifier else None)

    def _on_unsubscribe(self, packet) -> None:
        session = self.mqtt_session
        codes = []
        for topic_filter in packet.topic_filters:
            subscription = session.subscriptions.pop(topic_filter, None)
            if subscription is None:
                try:
                    parse_topic_filter(topic_filter)
                    codes.append(R.NO_SUBSCRIPTION_EXISTED)
                except codec.TopicFilterInvalid:
                    codes.append(R.TOPIC_FILTER_INVALID)  # 5.0 §3.11.3
            else:
                self.broker.unsubscribe(subscription)
                codes.append(R.SUCCESS)
        self.send(codec.encode(P.Unsuback(packet.packet_id, codes if self.level == P.MQTT_5 else ()), self.level))
        self.service.subscriptions_changed(session)

    # -- DISCONNECT -----------------------------------------------------------------------------

    def _on_disconnect(self, packet) -> None:
        """A normal DISCONNECT drops the Will; 5.0's 0x04 (with Will) keeps it."""
        if self.level == P.MQTT_5:
            expiry = packet.properties.get("session_expiry_interval")
            session = self.mqtt_session
            if expiry is not None:
                if not session.persistent and expiry > 0 and not self.connect.properties.get(
                        "session_expiry_interval"):
                    raise codec.ProtocolError("session expiry set at DISCONNECT after 0 at CONNECT "
                                              "(MQTT-3.14.2-2)")
                self.service.set_terms(session, expiry > 0, None if expiry == 0xFFFFFFFF else expiry)
            if packet.reason_code != 0x04:
                self.will = None
        else:
            self.will = None
        self.close_gracefully()

    def _on_auth(self, packet) -> None:
        raise codec.ProtocolError("AUTH without an authentication method in CONNECT (5.0 §4.12)")

    # -- the service's calls ------------------------------------------------------------

    def taken_over(self, resumed: bool) -> None:
        """Another connection took this client id (5.0: DISCONNECT 0x8E,
        §3.1.4). Its Will goes unless the new connection resumes the session
        (mosquitto's rule: the client is back, 5.0 §3.1.3.2.2)."""
        self.log.info("[cid {cid}] {peer}: MQTT client id taken over by a new connection", cid=self.client_id,
                      peer=self.peer)
        if self.level == P.MQTT_5:
            self.send(self._with_reason(P.Disconnect(R.SESSION_TAKEN_OVER), "another connection took the session over"))
        will, self.will = self.will, None
        session = self.mqtt_session
        self._closed = True  # the session is the new connection's now
        self._stop_keepalive()
        if will is not None and not resumed:
            self.service.will(session.client_id, will, 0, False, None)
        self.close_gracefully()

    # -- output: the session's calls ------------------------------------------------------------

    def send_publish(self, message, qos: int, retain: bool, identifiers, packet_id, dup: bool) -> None:
        """A PUBLISH of ``message`` to the client. A QoS 0 one with nothing
        of this delivery's own is encoded once per message and protocol
        level (the wire cache) and shared by every such subscriber; so is
        the payload of every PUBLISH of PAYLOAD_PIECE_AT bytes or more,
        which goes as a piece of its own after its head."""
        topic = message.topic
        payload = message.payload
        v5 = self.level == P.MQTT_5
        correlation = self.mqtt_session.correlation_for(message) if v5 else None
        properties = message.properties
        large = len(payload) >= PAYLOAD_PIECE_AT
        if (not qos and not retain and not identifiers and correlation is None and not self._alias_max_out
                and (properties is None or properties.expiry is None)):
            head = message.cached(_PLAIN_KEYS[v5, large], _PLAIN_BUILDERS[v5, large])
        else:
            block = b""
            if v5:
                alias = None
                if self._alias_max_out:
                    alias, topic = self._alias_for(topic)
                block = properties_block(message, identifiers or (), alias, correlation)
            name = topic.encode("utf-8")
            if large:
                head = codec.publish_head(name, len(payload), qos, retain, dup, packet_id, block)
            else:
                head = codec.encode_publish(name, payload, qos, retain, dup, packet_id, block)
        # head: the whole packet, or when large, the packet up to its payload
        size = len(head) + len(payload) if large else len(head)
        if self.max_packet_out is not None and size > self.max_packet_out:
            # 5.0 §3.1.2.11.4: a packet over the client's maximum is not sent (as if it was delivered).
            if topic and v5 and self._aliases_out.get(message.topic) == len(self._aliases_out):
                del self._aliases_out[message.topic]  # the alias it set up never reached the client
            if qos:
                self.mqtt_session.acknowledged(packet_id) or self.mqtt_session.completed(packet_id)
            return
        if large:
            self.send_payload(head, payload)
        else:
            self.send(head)
        if self._paused:
            self.hold_publisher(message.origin)

    def _alias_for(self, topic: str):
        """``(alias, topic to write)``: a topic with an alias goes as the
        alias alone; the first topics get aliases while the client's maximum
        allows (5.0 §3.3.2.3.4), the others go as they are."""
        alias = self._aliases_out.get(topic)
        if alias is not None:
            return alias, ""
        if len(self._aliases_out) < self._alias_max_out:
            alias = self._aliases_out[topic] = len(self._aliases_out) + 1
            return alias, topic
        return None, topic

    def send_pubrel(self, packet_id: int) -> None:
        self.send(codec.encode(P.Pubrel(packet_id), self.level))


_PINGRESP = b"\xd0\x00"


def _plain_publish_v311(message) -> bytes:
    return codec.encode_publish(message.topic.encode("utf-8"), message.payload)


def _plain_publish_v5(message) -> bytes:
    return codec.encode_publish(message.topic.encode("utf-8"), message.payload, properties=properties_block(message))


def _plain_head_v311(message) -> bytes:
    return codec.publish_head(message.topic.encode("utf-8"), len(message.payload))


def _plain_head_v5(message) -> bytes:
    return codec.publish_head(message.topic.encode("utf-8"), len(message.payload),
                              properties=properties_block(message))


# A QoS 0 PUBLISH with nothing of one delivery's own, in the wire cache by
# (MQTT 5?, payload a piece of its own?): the whole packet, or its head.
_PLAIN_KEYS = {(False, False): "mqtt.publish", (True, False): "mqtt.publish.v5",
               (False, True): "mqtt.publish.head", (True, True): "mqtt.publish.head.v5"}
_PLAIN_BUILDERS = {(False, False): _plain_publish_v311, (True, False): _plain_publish_v5,
                   (False, True): _plain_head_v311, (True, True): _plain_head_v5}
_LEVEL_NAMES = {P.MQTT_3_1: "3.1", P.MQTT_3_1_1: "3.1.1", P.MQTT_5: "5.0"}

# The handler of each packet type a client may send after CONNECT.
_HANDLERS = {
    P.CONNECT: MqttConnection._on_connect, P.PUBLISH: MqttConnection._on_publish,
    P.PUBACK: MqttConnection._on_puback, P.PUBREC: MqttConnection._on_pubrec,
    P.PUBREL: MqttConnection._on_pubrel, P.PUBCOMP: MqttConnection._on_pubcomp,
    P.SUBSCRIBE: MqttConnection._on_subscribe, P.UNSUBSCRIBE: MqttConnection._on_unsubscribe,
    P.PINGREQ: MqttConnection._on_pingreq, P.DISCONNECT: MqttConnection._on_disconnect,
    P.AUTH: MqttConnection._on_auth,
}


class MqttFactory(ConnectionRegistry):
    """Makes an MqttConnection per client of one MQTT listener."""

    def __init__(self, broker, settings, clock, security, tls=None, client_ids=None, siblings=None, shared=None):
        ConnectionRegistry.__init__(self, broker, clock, settings, security, tls, client_ids, siblings)
        self.settings = settings
        self.service = shared

    def buildProtocol(self, addr):
        return MqttConnection(self)
