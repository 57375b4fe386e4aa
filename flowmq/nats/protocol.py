"""The NATS client protocol, as nats-server 2.x speaks it to clients.

One ``NatsConnection`` per client: it feeds bytes to the sans-IO parser, acts
on the operations (CONNECT, PUB/HPUB, SUB/UNSUB, PING/PONG), turns them into
core calls (``broker.publish``, ``broker.subscribe``) and, as the delivery
target of its subscriptions, encodes MSG/HMSG frames.

The connection's life (connection limit, TLS and its timeout, the login
through the portal and its timeout, keepalive), the output queue, the
slow-consumer cut-off, flow control and the graceful close are the
protocol-neutral ``flowmq.connection.BrokerConnection``'s; this module gives
them NATS's frames (INFO, PING/PONG, -ERR texts) and its CONNECT options.
"""

from __future__ import annotations

import json
import os

from twisted.cred.credentials import UsernamePassword
from zope.interface import implementer

from flowmq import __version__
from flowmq.auth.credentials import TokenCredentials
from flowmq.connection import (
    CLOSE_AUTH_TIMEOUT, CLOSE_LOGIN_REFUSED, CLOSE_SLOW_CONSUMER, CLOSE_STALE, CLOSE_TOO_MANY_CONNECTIONS,
    GATHER_WRITE_AT, PAYLOAD_PIECE_AT, BrokerConnection,
)
from flowmq.core.errors import PermissionDenied
from flowmq.core.interfaces import IDeliveryTarget
from flowmq.core.message import Message, MessageRun
from flowmq.core.router import Subscription, filter_matches
from flowmq.core.topics import SEPARATOR, InvalidTopic
from flowmq.listener import ConnectionRegistry
from flowmq.logs import logger
from flowmq import rawbytes
from flowmq.nats import codec, convert
from flowmq.nats.codec import (
    CRLF, OP_CONNECT, OP_ERROR, OP_HPUB, OP_PING, OP_PONG, OP_PUB, OP_SUB, OP_UNSUB, encode_msg, msg_head,
)
from flowmq.nats.subjects import (
    SUBJECT_OF_TOPIC, TOPIC_OF_SUBJECT, EmptyToken, filter_to_topic_filter, is_literal_subject, subject_to_topic,
    topic_to_subject,
)

_cached_topic = TOPIC_OF_SUBJECT.get
_cached_subject = SUBJECT_OF_TOPIC.get

#: The nats-server protocol level FlowMQ implements. Clients (nats-py among
#: them) gate features on the server version, so INFO reports this one;
#: FlowMQ's own version is in the ``flowmq_version`` field.
NATS_SERVER_VERSION = "2.10.0"

# The texts of nats-server's -ERR lines that clients recognise.
ERR_STALE = "Stale Connection"
ERR_MAX_CONNECTIONS = "maximum connections exceeded"
ERR_MAX_SUBSCRIPTIONS = "maximum subscriptions exceeded"
ERR_INVALID_SUBJECT = "Invalid Subject"
ERR_INVALID_PUBLISH_SUBJECT = "Invalid Publish Subject"
ERR_BAD_HEADER = "bad message header detected"
ERR_NO_RESPONDERS_NEEDS_HEADERS = "no responders requires headers support"
ERR_HEADERS_NOT_SUPPORTED = "message headers not supported"
ERR_AUTHORIZATION = "Authorization Violation"
ERR_AUTH_TIMEOUT = "Authentication Timeout"
ERR_SLOW_CONSUMER = "Slow Consumer"
# FlowMQ's own: the broker failed to make a subscription (nats-server has no such case).
ERR_SUBSCRIBE_FAILED = "Subscription Failed"

# What a client closed by the connection base reads last.
_FAREWELLS = {
    CLOSE_SLOW_CONSUMER: ERR_SLOW_CONSUMER, CLOSE_TOO_MANY_CONNECTIONS: ERR_MAX_CONNECTIONS,
    CLOSE_AUTH_TIMEOUT: ERR_AUTH_TIMEOUT, CLOSE_LOGIN_REFUSED: ERR_AUTHORIZATION, CLOSE_STALE: ERR_STALE,
}

_HEADERS_KEY = codec.WIRE_CACHE_HEADERS
# The wire cache's reply subject of a message whose reply subject has no topic (an empty token).
_REPLY_KEY = "nats.reply"
# ADR-9 of the NATS project: the status a requester gets when nobody listens.
_NO_RESPONDERS_BLOCK = codec.encode_headers((), status=b"503")


def _topic_or_none(subject: bytes):
    """The topic of a publish or reply subject, or None if it has an empty
    token; InvalidTopic if it is not UTF-8."""
    try:
        return subject_to_topic(subject)
    except EmptyToken:
        return None


def make_server_id() -> str:
    """A nats-server style server id: 'N' and 55 base-32 characters."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "N" + "".join(alphabet[b % 32] for b in os.urandom(55))


class NatsSubscription(Subscription):
    """A subscription of one NATS connection, with its sid and UNSUB limit."""

    __slots__ = ("sid", "max_msgs", "delivered")

    def __init__(self, consumer, topic_filter, group, sid: bytes):
        Subscription.__init__(self, consumer, topic_filter, group)
        self.sid = sid
        self.max_msgs = 0
        self.delivered = 0


@implementer(IDeliveryTarget)
class NatsConnection(BrokerConnection):
    """One NATS client connection."""

    log = logger("flowmq.nats")
    protocol = "nats"  # what a JetStream stream answers with a PubAck (a message's origin)

    def __init__(self, factory: "NatsFactory"):
        settings = factory.settings
        BrokerConnection.__init__(self, factory)
        self.settings = settings
        self._broker_publish = self.broker.publish
        self._broker_publish_run = self.broker.publish_run
        self.parser = codec.NatsParser(settings.max_control_line, settings.max_payload)
        self.subscriptions: dict = {}  # sid bytes -> NatsSubscription
        # CONNECT options, with nats-server's defaults: a client that sends
        # no CONNECT, or one without "verbose", gets +OK after each operation,
        # and one without "pedantic" is in pedantic mode.
        self.verbose = True
        self.pedantic = True
        self.echo = True
        self.headers = False
        self.no_responders = False
        self.name = ""
        self._waiting_ops = None  # the operations that wait while a login is under way
        self._held_ops = None  # those of a read that wait while a subscriber holds this publisher back

    # -- connection life cycle ------------------------------------------------

    def greet(self):
        self.send(codec.encode_info(self._info(self.transport.getPeer())))

    def _info(self, peer) -> dict:
        host = self.transport.getHost()
        info = {
            "server_id": self.factory.server_id,
            "server_name": self.factory.server_name,
            "version": NATS_SERVER_VERSION,
            "flowmq_version": __version__,
            "proto": 1,
            "host": getattr(host, "host", ""),
            "port": getattr(host, "port", 0),
            "headers": True,
            "max_payload": self.settings.max_payload,
            "client_id": self.client_id,
            "client_ip": getattr(peer, "host", ""),
        }
        if self.broker.settings.jetstream.enabled:
            info["jetstream"] = True
        security = self.factory.security
        if security.portal is not None:
            info["auth_required"] = True
        if self.factory.tls is not None:
            info["tls_required"] = True
            info["tls_verify"] = self.factory.tls.verify_clients
        return info

    def stop_consuming(self):
        subscriptions, self.subscriptions = self.subscriptions, {}
        for subscription in subscriptions.values():
            self.broker.unsubscribe(subscription)

    def farewell(self, reason: str) -> bytes:
        text = _FAREWELLS.get(reason)  # nats-server closes without a word when it shuts down
        return b"" if text is None else codec.encode_err(text)

    def close_with_error(self, text: str) -> None:
        """Send ``-ERR 'text'`` after what is queued, then close."""
        self.send(codec.encode_err(text))
        self.close_gracefully()

    # -- input ------------------------------------------------------------------

    def dataReceived(self, data):
        if self._closing:
            return
        batcher = self._batcher
        batcher.begin()
        try:
            ops = self.parser.feed(data)
            if self.session is None and self.factory.security.portal is not None:
                ops = self._authenticate(ops)
            if self._held_ops is not None:  # held back by a subscriber: after what waits already
                self._held_ops.extend(ops)
            else:
                self._run(ops)
        finally:
            batcher.end()

    def wants_read_buffer(self) -> bool:
        """flowmq.transport: the next read goes to the read buffer
        (``read_buffer_received``), not ``dataReceived``: after the login,
        with no operations of earlier reads waiting, and when the parser
        takes it (``NatsParser.takes_read_buffer``: payloads whose frames
        are joined, not sent as pieces of their own)."""
        return ((self.session is not None or self.factory.security.portal is None) and self._held_ops is None
                and self.parser.takes_read_buffer(GATHER_WRITE_AT))

    def read_buffer_received(self, size: int):
        """``dataReceived`` for the ``size`` bytes that flowmq.transport read
        into flowmq.rawbytes' READ_BUFFER (PyPy, plain TCP), when
        ``wants_read_buffer()``. A PayloadRun can only be the first
        operation (``feed_read_buffer``), which ``_run`` handles before
        anything can hold the rest back: no operation that waits for a
        later turn refers to the buffer, which the next read reuses."""
        if self._closing:
            return
        batcher = self._batcher
        batcher.begin()
        try:
            self._run(self.parser.feed_read_buffer(size))
        finally:
            batcher.end()
            rawbytes.end_read()

    def _run(self, ops):
        handlers = _HANDLERS
        publish_run = self._publish_run
        pub = OP_PUB
        for index, op in enumerate(ops):
            if op[0] == pub:  # the hot path: straight to publish
                publish_run(op[1], op[2], op[3])
            else:
                handlers[op[0]](self, op)
            if self._closing:
                return
            if self._held_by:  # a subscriber holds us back: the rest of the read waits for input_released
                self._held_ops = ops[index + 1:]
                return

    def input_released(self) -> None:
        ops, self._held_ops = self._held_ops, None
        if ops:
            self._run(ops)

    def _on_error(self, op):
        self.log.info("[cid {cid}] protocol error from {peer}: {error}",
                      cid=self.client_id, peer=self.peer, error=op[1])
        self.close_with_error(op[1])

    def _on_connect(self, op):
        if self._connect_options(op) is not None:
            self._ok()

    def _connect_options(self, op):
        """Take CONNECT's options; None (and the connection closed) if they are bad."""
        try:
            options = json.loads(op[1])
            if not isinstance(options, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            self.close_with_error("Parse Error: CONNECT needs a JSON object")
            return None
        self.verbose = options.get("verbose", True) is not False
        self.pedantic = options.get("pedantic", True) is not False
        self.echo = options.get("echo", True) is not False
        self.headers = options.get("headers") is True
        self.no_responders = options.get("no_responders") is True
        self.name = str(options.get("name") or "")
        if self.no_responders and not self.headers:
            self.close_with_error(ERR_NO_RESPONDERS_NEEDS_HEADERS)
            return None
        self.log.debug("[cid {cid}] CONNECT name={name!r} lang={lang!r} version={version!r}",
                       cid=self.client_id, name=self.name, lang=options.get("lang"),
                       version=options.get("version"))
        return options

    # -- authentication (twisted.cred) ------------------------------------------

    def _authenticate(self, ops) -> list:
        """Before login: the first operation must be CONNECT with credentials.
        Returns the operations that can run now; the rest wait for the login."""
        if self._waiting_ops is not None:  # a login is under way
            self._waiting_ops.extend(ops)
            return []
        for index, op in enumerate(ops):
            if op[0] == OP_ERROR:
                return ops[index:]
            if op[0] != OP_CONNECT:
                self.log.info("[cid {cid}] {peer} sent an operation other than CONNECT before authenticating",
                              cid=self.client_id, peer=self.peer)
                self.close_with_error(ERR_AUTHORIZATION)
                return []
            options = self._connect_options(op)
            if options is None:
                return []
            self._waiting_ops = list(ops[index + 1:])
            self.log_in(*self._credentials(options))
            return []
        return []

    def _credentials(self, options):
        """The cred credentials CONNECT offers (user and password, else a
        token, else the TLS client certificate), and who they name."""
        user, password, token = options.get("user"), options.get("pass"), options.get("auth_token")
        try:
            if isinstance(user, str) and isinstance(password, str):
                return UsernamePassword(user.encode("utf-8"), password.encode("utf-8")), "user %r" % user
        except UnicodeEncodeError:  # JSON can carry lone surrogates
            return None, "a user name or password that is not UTF-8"
        if isinstance(token, str):
            return TokenCredentials(token), "a token"
        return self.certificate_credentials() or (None, "no credentials")

    def logged_in(self):
        self._ok()
        waiting, self._waiting_ops = self._waiting_ops, None
        self._batcher.begin()
        try:
            self._run(waiting)
        finally:
            self._batcher.end()

    def _on_ping(self, op):
        self.send(codec.PONG)

    def keepalive_frame(self) -> bytes:
        return codec.PING

    def _on_pong(self, op):
        self.keepalive_answered()

    def _on_hpub(self, op):
        if not self.headers:  # nats-server: HPUB needs "headers": true in CONNECT
            self.close_with_error(ERR_HEADERS_NOT_SUPPORTED)
            return
        block = op[3]
        if not block:
            # "HPUB <subject> [reply] 0 <size>": nats-server delivers a message
            # without headers (MSG, not HMSG); nats.js sends one on every
            # JetStream publish and KV put.
            self._publish(op[1], op[2], op[4], None)
            return
        try:
            status, pairs = codec.parse_headers(block)
        except codec.BadHeader:
            self.send(codec.encode_err(ERR_BAD_HEADER))
            return
        self._publish(op[1], op[2], op[4], (pairs, block))

    def _publish_run(self, subject: bytes, reply, payloads: list) -> None:
        """The payloads of a run of PUBs with the same subject and reply
        (the parser's OP_PUB). Published as one run (``Broker.publish_run``:
        one route lookup, one queueing per subscriber) when nothing is
        decided or answered per message; one by one otherwise: a verbose
        client's +OK, pedantic mode's -ERR, a subject or reply subject
        without a topic, "no responders" for requests (an UNSUB limit may
        end the only subscriber within the run), and a publisher with
        allow_responses (each request it got may be answered once)."""
        try:
            topic = _cached_topic(subject) or subject_to_topic(subject)
            reply_to = None if reply is None else (_cached_topic(reply) or subject_to_topic(reply))
        except InvalidTopic:
            topic = None
        if (len(payloads) == 1 or topic is None or self.verbose or (self.pedantic and not is_literal_subject(subject))
                or (reply is not None and self.no_responders)
                or (self.permissions is not None and self.permissions.allow_responses)):
            for payload in payloads:
                self._publish(subject, reply, payload, None)
                if self._closing:
                    return
            return
        try:
            # The payloads of one OP_PUB came with one control line: one size.
            # No headers and a reply that has a topic: the run's Messages,
            # made from the first, need nothing from its wire cache.
            first = payloads[0]
            run = MessageRun(Message(topic, first, None, reply_to, self), payloads, len(first))
            self._broker_publish_run(run)
        except PermissionDenied:
            for _ in payloads:
                self._publish_denied(subject)

    def _publish(self, subject: bytes, reply: bytes, payload: bytes, headers) -> None:
        try:
            topic = _cached_topic(subject) or subject_to_topic(subject)
            reply_to = None if reply is None else (_cached_topic(reply) or subject_to_topic(reply))
        except InvalidTopic:
            topic = self._topic_of_odd_subjects(subject, reply)
            if topic is None:
                return
            reply_to = None
        if self.pedantic and not is_literal_subject(subject):
            # nats-server's pedantic mode: an error, and the message goes on all the same.
            self.send(codec.encode_err(ERR_INVALID_PUBLISH_SUBJECT))
        message = Message(topic, payload, None, reply_to, self)
        if headers is not None:
            message.headers, properties = convert.from_nats(headers[0])
            if properties is not None and properties.user_id is not None and properties.user_id != self._user():
                # Only the logged-in user's own name may be claimed (RabbitMQ's
                # user-id rule): the block goes out rebuilt without the claim.
                message.headers, properties = convert.without_user_id(message.headers, properties)
            else:
                message.wire_cache = {_HEADERS_KEY: headers[1]}
            message.properties = properties
        if reply_to is None and reply is not None:  # it has no topic: NATS subscribers get it as it came
            if message.wire_cache is None:
                message.wire_cache = {}
            message.wire_cache[_REPLY_KEY] = reply
        acknowledge_at = len(self._out) if self.verbose else 0
        try:
            delivered = self._broker_publish(message)
        except PermissionDenied:
            self._publish_denied(subject)
            return
        if self.verbose and not self._closing:
            if len(self._out) == acknowledge_at:
                self.send(codec.OK)
            else:  # nats-server acknowledges before it delivers, to this client too
                self._out.insert(acknowledge_at, codec.OK)
                self._pending += len(codec.OK)
        if not delivered and reply_to is not None and self.no_responders:
            self._answer_no_responders(reply)

    def _user(self):
        """The name this connection logged in as, None without a login."""
        return self.session.user if self.session is not None else None

    def _topic_of_odd_subjects(self, subject: bytes, reply) -> str | None:
        """A publish whose subject or reply subject has no topic. One that is
        not UTF-8 is refused (nats-server takes it). One with an empty token
        is taken as nats-server takes it, silently outside pedantic mode,
        though no subscription can match it: to such a subject the message
        reaches nobody (a request is answered "no responders"); with such a
        reply subject it is delivered, and nobody can answer it. Returns the
        topic to publish to, or None when nothing is to be published."""
        try:
            topic = _topic_or_none(subject)
            if reply is not None:
                _topic_or_none(reply)
        except InvalidTopic:
            self.send(codec.encode_err(ERR_INVALID_PUBLISH_SUBJECT))
            return None
        if topic is None:
            self._publish_nowhere(subject, reply)
        return topic

    def _publish_nowhere(self, subject: bytes, reply) -> None:
        """A publish to a subject with an empty token, as nats-server answers it."""
        if self.pedantic:
            self.send(codec.encode_err(ERR_INVALID_PUBLISH_SUBJECT))
        if self.permissions is not None and self.permissions.publish_allow is not None:
            self._publish_denied(subject)  # nats-server: no allow filter matches such a subject
            return
        self._ok()
        if reply is not None and self.no_responders and _topic_or_none(reply) is not None:
            self._answer_no_responders(reply)

    def _publish_denied(self, subject: bytes) -> None:
        self.send(codec.encode_err('Permissions Violation for Publish to "%s"' % subject.decode("utf-8", "replace")))

    def _answer_no_responders(self, reply: bytes) -> None:
        """Tell a requester at once that nobody listens: a 503 status message on
        its reply subject, to this connection only (as nats-server does; it
        does not count against an UNSUB limit)."""
        levels = subject_to_topic(reply).split(SEPARATOR)
        for subscription in self.subscriptions.values():
            if subscription.group is None and filter_matches(subscription.filter.split(SEPARATOR), levels):
                self.send(codec.encode_hmsg(reply, subscription.sid, None, _NO_RESPONDERS_BLOCK, b""))
                return

    def _on_sub(self, op):
        subject, queue, sid = op[1], op[2], op[3]
        try:
            topic_filter = filter_to_topic_filter(subject.decode("utf-8"))
            group = queue.decode("utf-8") if queue is not None else None
        except (InvalidTopic, UnicodeDecodeError):
            self.send(codec.encode_err(ERR_INVALID_SUBJECT))
            return
        if sid in self.subscriptions:
            self._ok()  # nats-server ignores a SUB that reuses a live sid
            return
        if len(self.subscriptions) >= self.settings.max_subscriptions:
            self.send(codec.encode_err(ERR_MAX_SUBSCRIPTIONS))
            return
        subscription = NatsSubscription(self, topic_filter, group, sid)
        try:
            self.broker.subscribe(subscription)
        except InvalidTopic:  # deeper than broker.max_topic_levels
            self.send(codec.encode_err(ERR_INVALID_SUBJECT))
            return
        except PermissionDenied:
            self.send(codec.encode_err('Permissions Violation for Subscription to "%s"'
                                       % subject.decode("utf-8", "replace")))
            return
        except Exception:  # a bug behind subscribe (a watcher): no subscription, the client stays
            self.log.failure("[cid {cid}] subscribing to {subject} failed", cid=self.client_id, subject=subject)
            self.send(codec.encode_err(ERR_SUBSCRIBE_FAILED))
            return
        self.subscriptions[sid] = subscription
        self._ok()

    def _on_unsub(self, op):
        sid, max_msgs = op[1], op[2]
        subscription = self.subscriptions.get(sid)
        if subscription is not None:
            if max_msgs and subscription.delivered < max_msgs:
                subscription.max_msgs = max_msgs
                subscription.limited = True
            else:
                self._remove(subscription)
        self._ok()

    def _remove(self, subscription) -> None:
        if self.subscriptions.pop(subscription.sid, None) is not None:
            self.broker.unsubscribe(subscription)

    def _ok(self):
        if self.verbose:
            self.send(codec.OK)

    # -- output ---------------------------------------------------------------

    def deliver(self, message, subscriptions) -> None:
        """IDeliveryTarget: a message that matches ``subscriptions`` (a closing
        connection has none left, and nothing is queued while it closes).
        One MSG per subscription, each with its sid, as nats-server sends
        when several subscriptions of a client match one message."""
        self._deliver(message, (message.payload,), subscriptions)

    def deliver_run(self, run, subscriptions) -> None:
        """IDeliveryTarget: ``deliver`` for each message of a MessageRun,
        from its payloads; their frames are queued at once."""
        self._deliver(run.first, run.payloads, subscriptions, run.size, run)

    def _deliver(self, first, payloads, subscriptions, size=None, run=None) -> None:
        """The frames of ``payloads``, with the topic, reply and headers of
        the message ``first``, for ``subscriptions``; ``size``: the size of
        every payload, if they all have one; ``run``: the MessageRun they
        come from, whose frames another connection may have made."""
        if self._closing:
            return
        topic = first.topic
        reply = first.reply_to
        subject = _cached_subject(topic) or topic_to_subject(topic)
        if reply is not None:
            reply = _cached_subject(reply) or topic_to_subject(reply)
        elif first.wire_cache is not None:
            reply = first.wire_cache.get(_REPLY_KEY)
        block = None
        if (first.headers is not None or first.properties is not None) and self.headers:
            block = first.cached(_HEADERS_KEY, convert.header_block)
        frames = []
        queued = 0
        gathered = False
        head_of = head_size = None  # the subscription and payload size of the last frame head made
        limited = False  # a subscription with an UNSUB limit: messages are counted one by one
        for subscription in subscriptions:
            limited = limited or subscription.limited
        if size is not None and size < GATHER_WRITE_AT and block is None and len(subscriptions) == 1 and not limited:
            # A run whose frames differ only in their payloads (a run of
            # PUBs: no headers): one head serves them all, and one join (C
            # code) makes all the frames at once, CRLF and head between two
            # payloads, the first head and the last CRLF put to the
            # payloads at the ends. The frames depend on the payloads and
            # the head alone: a fan-out's subscribers with the same head
            # (same sid: clients number their subscriptions from 1) share
            # one bytes object, made by the first of them.
            subscription = subscriptions[0]
            head = msg_head(subject, subscription.sid, reply, size)
            if type(payloads) is rawbytes.PayloadRun and not run.fanout and self.add_run_frames(head, payloads):
                # One subscriber: its frames made straight from the read buffer
                # (flowmq.rawbytes). add_run_frames refuses a paused connection,
                # so there is no publisher to hold.
                subscription.delivered += len(payloads)
                return
            framed = run.framed if run is not None else None
            if framed is not None and framed[0] == head:
                frames = framed[1]
            else:
                ends = list(payloads)
                ends[0] = head + ends[0]
                ends[-1] += CRLF
                frames = (CRLF + head).join(ends)
                if run is not None:
                    run.framed = (head, frames)
            subscription.delivered += len(payloads)
            self.send_frames([frames], len(frames), False)
            if self._paused:
                self.hold_publisher(first.origin)
            return
        for payload in payloads:
            length = len(payload)
            for subscription in subscriptions:  # almost always one
                if limited and subscription.max_msgs and subscription.delivered >= subscription.max_msgs:
                    continue  # it reached its UNSUB limit earlier in this run
                if length < PAYLOAD_PIECE_AT:
                    if block is None:
                        frame = encode_msg(subject, subscription.sid, reply, payload)
                    else:
                        frame = codec.encode_hmsg(subject, subscription.sid, reply, block, payload)
                    frames.append(frame)
                    queued += len(frame)
                else:  # the payload goes as it is, shared by every subscriber
                    if subscription is not head_of or length != head_size:
                        head_of, head_size = subscription, length
                        if block is None:
                            head = msg_head(subject, subscription.sid, reply, length)
                        else:
                            head = codec.hmsg_head(subject, subscription.sid, reply, block, length)
                    frames += (head, payload, CRLF)
                    queued += len(head) + length + 2
                    if length >= GATHER_WRITE_AT:
                        gathered = True
                if limited:
                    # One more message for the subscription: the last one its UNSUB limit allows ends it.
                    subscription.delivered += 1
                    if subscription.max_msgs and subscription.delivered >= subscription.max_msgs:
                        self._remove(subscription)
        if not limited:  # counted for a later UNSUB with a limit
            for subscription in subscriptions:
                subscription.delivered += len(payloads)
        self.send_frames(frames, queued, gathered)
        if self._paused:
            self.hold_publisher(first.origin)


# The handler of each parser operation, by its OP_* code.
_HANDLERS = {
    OP_HPUB: NatsConnection._on_hpub,
    OP_SUB: NatsConnection._on_sub, OP_UNSUB: NatsConnection._on_unsub,
    OP_CONNECT: NatsConnection._on_connect, OP_PING: NatsConnection._on_ping,
    OP_PONG: NatsConnection._on_pong, OP_ERROR: NatsConnection._on_error,
}


class NatsFactory(ConnectionRegistry):
    """Makes a NatsConnection per client; shared state of the NATS listener."""

    def __init__(self, broker, settings, clock, security, tls=None, client_ids=None, siblings=None, shared=None):
        ConnectionRegistry.__init__(self, broker, clock, settings, security, tls, client_ids, siblings)
        self.settings = settings
        self.server_id = make_server_id()
        self.server_name = broker.settings.broker.server_name

    def buildProtocol(self, addr):
        return NatsConnection(self)
