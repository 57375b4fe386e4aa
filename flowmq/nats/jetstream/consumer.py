"""A JetStream consumer: the core consumer (flowmq/core/streams/consumer.py)
with what is NATS's own.

The core consumer keeps the position in the stream (its cursor), what awaits
an ack (its ack tracker, with the redelivery timers) and delivers to
targets with credit. This adapter adds the JetStream parts: the JSON
configuration, the ack subjects and the verbs sent to them, status
messages, and the two kinds of target: a push consumer's deliver subject
(while somebody subscribes to it, with flow control and idle heartbeats)
and a pull consumer's waiting pull requests (pull.py: batch, max_bytes,
expires, no_wait).

Every delivery's reply subject is ``$JS.ACK.<stream>.<consumer>.<delivery
count>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>``, the v1 form
that nats-py's ``msg.metadata`` reads; the client publishes the ack verb
there (+ACK, +OK or empty, -NAK [{"delay": ns} or a Go duration], +WPI,
+TERM [reason], +NXT [request]).
"""

from __future__ import annotations

import json
import os
import time

from zope.interface import implementer

from flowmq.core.message import Message
from flowmq.core.streams import cursor
from flowmq.core.streams.consumer import UNLIMITED, IConsumerTarget
from flowmq.core.streams.consumer import Consumer as CoreConsumer
from flowmq.core.topics import SEPARATOR
from flowmq.logs import logger
from flowmq.nats.convert import message_block_length
from flowmq.nats.jetstream.config import DEFAULT_INACTIVE_THRESHOLD, INT64, consumer_filter_subjects, topic_filters
from flowmq.nats.jetstream.pull import PullRequest
from flowmq.nats.jetstream.wire import parse_go_duration, parse_rfc3339, rfc3339, status_message
from flowmq.nats.subjects import subject_to_topic, topic_to_subject

log = logger("flowmq.jetstream")

#: Bytes a push consumer with flow control sends between two flow-control requests.
FLOW_CONTROL_WINDOW = 256 * 1024
_ACK = b"+ACK"
_OK = b"+OK"  # nats-server still takes it as an ack
_PROGRESS = b"+WPI"
_NAK = b"-NAK"
_TERM = b"+TERM"
_NEXT = b"+NXT"
#: nats-server's deliver policies as the cursor's start positions.
_START = {"all": cursor.ALL, "new": cursor.NEW, "last": cursor.LAST, "by_start_sequence": cursor.BY_SEQ,
          "by_start_time": cursor.BY_TIME, "last_per_subject": cursor.LAST_PER_TOPIC}
_NS = 1e9


class Consumer(CoreConsumer):
    """One consumer of one stream."""

    def __init__(self, stream, config: dict, created: int):
        CoreConsumer.__init__(self, stream.store, stream.clock)
        self.stream = stream
        self.broker = stream.broker
        self.created = created
        self.name = config.get("name") or config.get("durable_name")
        self.durable = "durable_name" in config
        # The clock's seconds of the last delivery or pull request (inactivity, heartbeats).
        self.last_active = 0.0
        self._last_delivered = 0  # ns since the epoch of the last delivery, and of the last ack (INFO's last_active)
        self._last_acked = 0
        self._heartbeat = None
        self._inactivity = None
        self._inactive_since = None
        self._flow_bytes = 0
        self._flow_reply = None
        self._flow_count = 0
        self.files = None  # a durable consumer's ConsumerFiles (core/streams/state.py), set by the service
        self.configure(config)
        self._ack_prefix = subject_to_topic("$JS.ACK.%s.%s" % (stream.name, self.name)) + SEPARATOR
        self._ack_subject_length = len(topic_to_subject(self._ack_prefix[:-1])) + 1

    @property
    def deleted(self) -> bool:
        return self.stopped

    @property
    def waiting(self):
        """The waiting pull requests, oldest first (a push consumer has none)."""
        return self.targets if self.deliver_topic is None else ()

    def ack_prefix_levels(self) -> tuple:
        """The stream and consumer levels of our ack topics (the service's lookup key)."""
        levels = self._ack_prefix.split(SEPARATOR)
        return levels[2], levels[3]

    # -- configuration and start ---------------------------------------------

    def configure(self, config: dict) -> None:
        self.config = config
        filters = topic_filters(consumer_filter_subjects(config))
        # A filter that takes in the whole stream is no filter (cheaper reads).
        self.cursor.set_filters(None if self.stream.covers_all(filters) else filters)
        self.set_policy(config["ack_policy"], config.get("ack_wait", 0) / _NS,
                        [step / _NS for step in config.get("backoff") or ()],
                        config["max_deliver"], config.get("max_ack_pending", -1))
        self.headers_only = bool(config.get("headers_only"))
        deliver_subject = config.get("deliver_subject")
        self.deliver_topic = None if deliver_subject is None else subject_to_topic(deliver_subject)
        if self.deliver_topic is not None:
            self.targets.clear()
            self.targets.append(_PushTarget(self))
        self.flow_control = bool(config.get("flow_control"))
        self.idle_heartbeat = config.get("idle_heartbeat", 0)
        threshold = config.get("inactive_threshold", 0 if self.durable else DEFAULT_INACTIVE_THRESHOLD)
        self.inactive_threshold = threshold

    def start_position(self) -> None:
        """Where a new consumer starts, from its deliver policy."""
        config = self.config
        policy = config["deliver_policy"]
        timestamp = parse_rfc3339(config["opt_start_time"]) if policy == "by_start_time" else 0
        self.start(_START[policy], config.get("opt_start_seq", 0), timestamp)

    def activate(self) -> None:
        """Start the timers and deliver what is there."""
        self.last_active = self.clock.seconds()
        if self.idle_heartbeat and self.deliver_topic is not None:
            self._heartbeat = self.clock.callLater(self.idle_heartbeat / _NS, self._send_heartbeat)
        if self.inactive_threshold:
            self._inactivity = self.clock.callLater(self._inactivity_period(), self._check_inactivity)
        self.pump()

    def stop(self) -> None:
        """Stop every timer; tell waiting pull requests that the consumer is gone."""
        CoreConsumer.stop(self)
        for call in (self._heartbeat, self._inactivity):
            if call is not None and call.active():
                call.cancel()
        self._heartbeat = self._inactivity = None
        waiting = self.waiting
        while waiting:
            waiting.popleft().finish(b"409", b"Consumer Deleted")

    # -- what the stream asks ---------------------------------------------------

    def on_append(self, topic: str) -> None:
        """A message was stored: count it, deliver it if we can."""
        self.appended(topic)

    def on_removed(self, seq: int, topic: str) -> None:
        """The store removed a message (limits, expiry, delete, purge)."""
        self.removed(seq, topic)

    # -- the core consumer's hooks ------------------------------------------------

    def changed(self) -> None:
        self.stream.service.consumer_changed(self)

    def settled(self, seqs) -> None:
        self._last_acked = time.time_ns()
        self.stream.log.acknowledged(self, seqs)

    def pumped(self) -> None:
        if self.waiting:
            self._finish_no_wait()

    # -- delivery -----------------------------------------------------------------

    def outgoing(self, delivery) -> Message:
        """The delivery as a NATS message: under its own subject, with its ack
        reply subject (and only its headers if so configured)."""
        stored = delivery.stored
        reply = self._ack_prefix + "%d/%d/%d/%d/%d" % (
            delivery.deliveries, stored.seq, delivery.consumer_seq, stored.timestamp, self.num_pending())
        payload = stored.payload
        headers = stored.headers
        if self.headers_only:
            headers = (headers or ()) + (("Nats-Msg-Size", str(len(payload))),)
            payload = b""
        return Message(stored.topic, payload, headers, reply, properties=stored.properties)

    def size(self, message) -> int:
        """A delivery's bytes as nats-server counts them for a pull request's
        max_bytes and for flow control: subject + ack reply subject + header
        block as it goes out (headers and the lines of the properties) +
        payload (the reply's tail after our prefix is digits and dots)."""
        return (len(topic_to_subject(message.topic)) + self._ack_subject_length
                + len(message.reply_to) - len(self._ack_prefix)
                + message_block_length(message) + len(message.payload))

    def sent(self) -> float:
        """A message went out now (the clock's seconds, returned): the consumer is active."""
        self._last_delivered = time.time_ns()
        self.last_active = now = self.clock.seconds()
        return now

    # -- push extras: flow control and heartbeats ------------------------------

    def flow_sent(self, size: int) -> None:
        """``size`` bytes went to the deliver subject of a consumer with flow
        control: ask for flow control past the window."""
        self._flow_bytes += size
        if self._flow_reply is None and self._flow_bytes >= FLOW_CONTROL_WINDOW:
            self._ask_flow_control()

    def flow_stalled(self) -> bool:
        return self._flow_reply is not None and self._flow_bytes >= FLOW_CONTROL_WINDOW

    def _ask_flow_control(self) -> None:
        self._flow_count += 1
        self._flow_reply = subject_to_topic(
            "$JS.FC.%s.%s.%d" % (self.stream.name, self.name, self._flow_count))
        self.broker.deliver_to(self.deliver_topic, status_message(
            self.deliver_topic, b"100", b"FlowControl Request", reply_to=self._flow_reply))

    def flow_control_reply(self, topic: str) -> None:
        """The client answered a flow-control request: the window is open again."""
        if topic == self._flow_reply:
            self._flow_reply = None
            self._flow_bytes = 0
            self.pump()

    def _send_heartbeat(self) -> None:
        self._heartbeat = self.clock.callLater(self.idle_heartbeat / _NS, self._send_heartbeat)
        if self.clock.seconds() - self.last_active < self.idle_heartbeat / _NS:
            return
        if self.broker.router.has_interest(self.deliver_topic):
            self.send_heartbeat(self.deliver_topic)

    def send_heartbeat(self, topic: str) -> None:
        """A "100 Idle Heartbeat" status to ``topic``, with where delivery
        stands (and the flow-control request it waits for, if stalled)."""
        headers = [("Nats-Last-Consumer", str(self.delivered_consumer_seq)),
                   ("Nats-Last-Stream", str(self.delivered_stream_seq))]
        if self._flow_reply is not None:
            headers.append(("Nats-Consumer-Stalled", topic_to_subject(self._flow_reply).decode()))
        self.broker.deliver_to(topic, status_message(topic, b"100", b"Idle Heartbeat", headers))

    # -- pull requests ------------------------------------------------------------

    def request_next(self, reply: str, body: bytes) -> None:
        """A pull request (CONSUMER.MSG.NEXT or +NXT) whose messages go to ``reply``."""
        try:
            request = PullRequest.parse(self, reply, body)
        except ValueError as e:
            self.broker.deliver_to(reply, status_message(reply, b"400", b"Bad Request - %s" % str(e).encode()))
            return
        self.last_active = self.clock.seconds()
        refusal = request.exceeds(self.config)
        if refusal is not None:
            request.finish(b"409", refusal)
            return
        if request.no_wait and not request.expires and not self.acks.has_due() and not self.num_pending():
            request.finish(b"404", b"No Messages")
            return
        if len(self.waiting) >= self.config.get("max_waiting", 512):
            request.finish(b"409", b"Exceeded MaxWaiting")
            return
        request.start_timer()
        self.attach(request)

    def _finish_no_wait(self) -> None:
        """no_wait requests end at the end of the stream: 404 No Messages
        (one that set expires and got nothing yet keeps waiting)."""
        if self.acks.has_due() or self.num_pending():
            return
        for request in list(self.waiting):
            if request.no_wait and (not request.expires or request.delivered):
                self.detach(request)
                request.finish(b"404", b"No Messages")

    def request_expired(self, request) -> None:
        if request in self.waiting:
            self.detach(request)
            self.time_out(request)

    def time_out(self, request) -> None:
        request.finish(b"408", b"Request Timeout", request.pending_headers())

    # -- acknowledgements ---------------------------------------------------------

    def acknowledge(self, seq: int, body: bytes, reply) -> None:
        """The ack verb ``body`` for the delivery of stream seq ``seq``, read
        as nats-server's processAck does: an empty body, +ACK or +OK (exactly)
        acks; -NAK, +NXT and +TERM are prefixes (what follows is their
        argument); +WPI must stand alone; any other body is ignored."""
        if not body or body == _ACK or body == _OK:
            self.ack(seq)
        elif body.startswith(_NEXT):
            self.ack(seq)
            if reply is not None:
                self.request_next(reply, body[len(_NEXT):])
        elif body.startswith(_NAK):
            self.nak(seq, nak_delay(body[len(_NAK):]) / _NS)
        elif body == _PROGRESS:
            self.in_progress(seq)
        elif body.startswith(_TERM):
            self.term(seq)

    # -- inactivity -------------------------------------------------------------

    def _inactivity_period(self) -> float:
        return max(0.05, min(1.0, self.inactive_threshold / 2e9))

    def _check_inactivity(self) -> None:
        self._inactivity = None
        if self.deleted:
            return
        if self.deliver_topic is not None:
            active = self.broker.router.has_interest(self.deliver_topic)
        else:
            self._target()  # drops waiting requests whose requester is gone
            active = bool(self.waiting) or self.clock.seconds() - self.last_active < self.inactive_threshold / _NS
        now = self.clock.seconds()
        if active:
            self._inactive_since = None
        elif self._inactive_since is None:
            self._inactive_since = now
        elif now - self._inactive_since >= self.inactive_threshold / _NS:
            log.info("consumer {stream} > {name} deleted after {s:.1f} s without interest",
                     stream=self.stream.name, name=self.name, s=self.inactive_threshold / 1e9)
            self.stream.service.delete_consumer(self.stream, self.name)
            return
        self._inactivity = self.clock.callLater(self._inactivity_period(), self._check_inactivity)

    # -- views and persistence -------------------------------------------------

    def info(self) -> dict:
        """nats-server's ConsumerInfo (not clustered: no "cluster"; "last_active"
        once there was a delivery / an ack since the start)."""
        push_bound = self.deliver_topic is not None and self.broker.router.has_interest(self.deliver_topic)
        delivered = {"consumer_seq": self.delivered_consumer_seq, "stream_seq": self.delivered_stream_seq}
        ack_floor = {"consumer_seq": self.ack_floor_consumer_seq, "stream_seq": self.ack_floor_stream_seq}
        for sequences, last in ((delivered, self._last_delivered), (ack_floor, self._last_acked)):
            if last:
                sequences["last_active"] = rfc3339(last)
        document = {
            "stream_name": self.stream.name, "name": self.name, "created": rfc3339(self.created),
            "config": self.config, "delivered": delivered, "ack_floor": ack_floor,
            "num_ack_pending": len(self.acks.pending), "num_redelivered": self.acks.redelivered(),
            "num_waiting": len(self.waiting), "num_pending": self.num_pending(), "ts": rfc3339(time.time_ns()),
        }
        if push_bound:
            document["push_bound"] = True
        return document


@implementer(IConsumerTarget)
class _PushTarget:
    """A push consumer's deliver subject, as a target of the core consumer:
    it takes all it gets while somebody subscribes to it, unless stalled by
    flow control."""

    __slots__ = ("consumer",)

    def __init__(self, consumer: Consumer):
        self.consumer = consumer

    def credit(self) -> int:
        consumer = self.consumer
        if consumer.flow_stalled():
            return 0  # until the client answers flow control
        return UNLIMITED if consumer.broker.router.has_interest(consumer.deliver_topic) else 0

    def deliver(self, delivery) -> bool:
        consumer = self.consumer
        message = consumer.outgoing(delivery)
        consumer.sent()
        consumer.broker.deliver_to(consumer.deliver_topic, message)
        if consumer.flow_control:  # the size only counts toward the flow-control window
            consumer.flow_sent(consumer.size(message))
        return True


def nak_delay(argument: bytes) -> int:
    """The delay in ns that a -NAK's argument asks for (0 or less: redeliver
    now), read as nats-server's processNak reads it: a JSON object's "delay"
    (its key matched without regard to case, as Go's encoding/json does) must
    be an integer that fits Go's time.Duration (int64 ns); an argument that is
    not an object is a Go duration (``-NAK 5s``). Whatever nats-server cannot
    read that way (a float, a string, 1e400, 2**63, broken JSON) is a plain
    -NAK there, so it is here too: the delay is bounded by int64 ns (292 years)."""
    text = argument.strip().decode("utf-8", "replace")
    if not text:
        return 0
    try:
        if not text.startswith("{"):
            return parse_go_duration(text)
        pairs = json.loads(text, object_pairs_hook=list, parse_constant=_not_json)
    except (ValueError, RecursionError):  # RecursionError: "{"a": [[[[..." nested too deep
        return 0
    delay = 0
    for key, value in pairs:
        if key.lower() == "delay" and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not INT64[1] <= value <= INT64[2]:
                return 0  # Go's json refuses it for a time.Duration
            delay = value
    return delay


def _not_json(constant: str):
    """NaN and Infinity, which Python's json takes and Go's refuses."""
    raise ValueError("%s is not JSON" % constant)


def random_name() -> str:
    """A name for an ephemeral consumer (nats-server uses random names too)."""
    return os.urandom(6).hex().upper()
