"""A JetStream consumer: a position in a stream, and what is awaiting an ack.

Push consumers deliver to their deliver subject while somebody subscribes
to it (optionally as a queue group, with flow control and idle heartbeats);
pull consumers deliver to the reply subject of each waiting pull request
(batch, max_bytes, expires, no_wait). Both read the stream's store from
``next_seq``, and redeliveries (ack wait expired, -NAK) go first.

Every delivery's reply subject is ``$JS.ACK.<stream>.<consumer>.<delivery
count>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>``, the v1 form
that nats-py's ``msg.metadata`` reads; the client publishes the ack verb
there (+ACK, +OK or empty, -NAK [{"delay": ns} or a Go duration], +WPI,
+TERM [reason], +NXT [request]).
"""

from __future__ import annotations

import bisect
import collections
import heapq
import json
import os
import time

from flowmq.core.message import Message
from flowmq.core.router import filter_matches
from flowmq.core.topics import SEPARATOR
from flowmq.logs import logger
from flowmq.nats.jetstream.config import DEFAULT_INACTIVE_THRESHOLD, INT64, consumer_filter_subjects, topic_filters
from flowmq.nats.jetstream.pull import PullRequest
from flowmq.nats.jetstream.wire import header_block_length, parse_go_duration, parse_rfc3339, rfc3339, status_message
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


class _Pending:
    """A delivered message that awaits its ack."""

    __slots__ = ("consumer_seq", "deliveries", "deadline")

    def __init__(self, consumer_seq: int, deliveries: int, deadline: int):
        self.consumer_seq = consumer_seq
        self.deliveries = deliveries
        self.deadline = deadline  # ns; 0 while queued for redelivery


class Consumer:
    """One consumer of one stream."""

    def __init__(self, stream, config: dict, created: int):
        self.stream = stream
        self.store = stream.store
        self.broker = stream.broker
        self.clock = stream.clock
        self.created = created
        self.name = config.get("name") or config.get("durable_name")
        self.durable = "durable_name" in config
        # Delivery state (restored by ``restore`` after a restart).
        self.next_seq = 1
        self.delivered_consumer_seq = 0
        self.delivered_stream_seq = 0
        self.ack_floor_consumer_seq = 0
        self.ack_floor_stream_seq = 0
        # stream seq -> _Pending, in order of first delivery (ordered: the
        # first one, which sets the ack floor, is found in O(1) as acks go)
        self.pending = collections.OrderedDict()
        self._redeliver = collections.deque()  # stream seqs due again, oldest first
        self._deadlines: list = []  # heap of (deadline ns, stream seq)
        # A last_per_subject start: the seqs to send first (sorted), and how
        # many of them went; a list, so that "is it still to come" is a bisect.
        self._last_per_subject: list = []
        self._last_per_subject_sent = 0
        self.waiting = collections.deque()  # PullRequest, oldest first
        self.last_active = 0  # ns of the last delivery or pull request (inactivity, heartbeats)
        self._last_delivered = 0  # ns of the last delivery, and of the last ack (INFO's last_active)
        self._last_acked = 0
        self._timer = None  # the redelivery timer, due at _timer_due (ns)
        self._timer_due = 0
        self._heartbeat = None
        self._inactivity = None
        self._inactive_since = None
        self._flow_bytes = 0
        self._flow_reply = None
        self._flow_count = 0
        self._pumping = False
        self._from_last_per_subject = False  # where the last _next_message came from
        self._log_pending = None  # messages from next_seq on that we want; None: count them again
        self.deleted = False
        self.configure(config)
        self._ack_prefix = subject_to_topic("$JS.ACK.%s.%s" % (stream.name, self.name)) + SEPARATOR
        self._ack_subject_length = len(topic_to_subject(self._ack_prefix[:-1])) + 1

    def ack_prefix_levels(self) -> tuple:
        """The stream and consumer levels of our ack topics (the service's lookup key)."""
        levels = self._ack_prefix.split(SEPARATOR)
        return levels[2], levels[3]

    # -- configuration and start ---------------------------------------------

    def configure(self, config: dict) -> None:
        self.config = config
        self._log_pending = None
        filters = topic_filters(consumer_filter_subjects(config))
        # A filter that takes in the whole stream is no filter (cheaper reads).
        self.filters = None if self.stream.covers_all(filters) else filters
        self._filter_levels = None if self.filters is None else [f.split(SEPARATOR) for f in self.filters]
        self.ack_none = config["ack_policy"] == "none"
        self.ack_all = config["ack_policy"] == "all"
        self.ack_wait = config.get("ack_wait", 0)
        self.backoff = config.get("backoff") or ()
        self.max_deliver = config["max_deliver"]
        self.max_ack_pending = config.get("max_ack_pending", -1)
        self.headers_only = bool(config.get("headers_only"))
        deliver_subject = config.get("deliver_subject")
        self.deliver_topic = None if deliver_subject is None else subject_to_topic(deliver_subject)
        self.flow_control = bool(config.get("flow_control"))
        self.idle_heartbeat = config.get("idle_heartbeat", 0)
        threshold = config.get("inactive_threshold", 0 if self.durable else DEFAULT_INACTIVE_THRESHOLD)
        self.inactive_threshold = threshold

    def start_position(self) -> None:
        """Where a new consumer starts, from its deliver policy."""
        config = self.config
        policy = config["deliver_policy"]
        state = self.store.state()
        if policy == "all":
            self.next_seq = max(state.first_seq, 1)
        elif policy == "new":
            self.next_seq = state.last_seq + 1
        elif policy == "last":
            newest = self._last_stored()
            self.next_seq = newest.seq if newest is not None else state.last_seq + 1
        elif policy == "by_start_sequence":
            self.next_seq = config["opt_start_seq"]
        elif policy == "by_start_time":
            self.next_seq = self.store.seq_for_time(parse_rfc3339(config["opt_start_time"]))
        else:  # last_per_subject: the newest message of each subject, then what comes
            seqs = sorted(
                stored.seq for topic_filter in (self.filters or [None])
                for stored in self._newest_per_topic(topic_filter))
            self._last_per_subject = seqs
            self.next_seq = state.last_seq + 1
        self.delivered_stream_seq = self.ack_floor_stream_seq = max(self.next_seq - 1, 0)
        self._log_pending = None

    def _newest_per_topic(self, topic_filter):
        for topic in self.store.topics(topic_filter):
            stored = self.store.last_message(topic)
            if stored is not None:
                yield stored

    def _last_stored(self):
        newest = None
        for topic_filter in (self.filters or [None]):
            stored = self.store.last_message(topic_filter)
            if stored is not None and (newest is None or stored.seq > newest.seq):
                newest = stored
        return newest

    def activate(self) -> None:
        """Start the timers and deliver what is there."""
        self.last_active = time.time_ns()
        if self.idle_heartbeat and self.deliver_topic is not None:
            self._heartbeat = self.clock.callLater(self.idle_heartbeat / 1e9, self._send_heartbeat)
        if self.inactive_threshold:
            self._inactivity = self.clock.callLater(self._inactivity_period(), self._check_inactivity)
        self._arm_timer()
        self.pump()

    def stop(self) -> None:
        """Stop every timer; tell waiting pull requests that the consumer is gone."""
        self.deleted = True
        for call in (self._timer, self._heartbeat, self._inactivity):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._heartbeat = self._inactivity = None
        while self.waiting:
            request = self.waiting.popleft()
            request.finish(self, b"409", b"Consumer Deleted")

    # -- what the stream asks ---------------------------------------------------

    def wants(self, topic: str) -> bool:
        if self._filter_levels is None:
            return True
        levels = topic.split(SEPARATOR)
        return any(filter_matches(pattern, levels) for pattern in self._filter_levels)

    def has_acknowledged(self, seq: int) -> bool:
        if seq <= self.ack_floor_stream_seq:
            return True
        return seq < self.next_seq and seq not in self.pending and not self._still_to_send(seq)

    def _still_to_send(self, seq: int) -> bool:
        """Is ``seq`` among the last-per-subject messages not sent yet?"""
        lps = self._last_per_subject
        index = bisect.bisect_left(lps, seq, self._last_per_subject_sent)
        return index < len(lps) and lps[index] == seq

    def _last_per_subject_left(self) -> int:
        return len(self._last_per_subject) - self._last_per_subject_sent

    def on_append(self, topic: str) -> None:
        """A message was stored: count it, deliver it if we can."""
        if self._log_pending is not None and self.wants(topic):
            self._log_pending += 1
        if self.waiting or self.deliver_topic is not None:
            self.pump()

    def on_removed(self, seq: int, topic: str) -> None:
        """The store removed a message (limits, expiry, delete, purge)."""
        if self._log_pending is not None and seq >= self.next_seq and self.wants(topic):
            self._log_pending -= 1

    # -- delivery -----------------------------------------------------------------

    def num_pending(self) -> int:
        """Messages not yet delivered (nats-server's num_pending).

        Every delivery reports it, so it is kept up to date by appends,
        deliveries and removals rather than counted per message (counting
        over a wildcard filter visits every matching subject)."""
        if self._log_pending is None:
            if self.filters is None:
                self._log_pending = self.store.count_pending(self.next_seq)
            else:
                self._log_pending = sum(self.store.count_pending(self.next_seq, f) for f in self.filters)
        return self._last_per_subject_left() + self._log_pending

    def pump(self) -> None:
        """Deliver while there is a target and something to deliver."""
        if self._pumping or self.deleted:
            return
        self._pumping = True
        try:
            while True:
                target = self._target()
                if target is None:
                    break
                stored, deliveries = self._next_message()
                if stored is None:
                    break
                message = self._outgoing(stored, deliveries)
                size = self._size(message)
                if isinstance(target, PullRequest) and not target.fits(size):
                    self._unread(stored, deliveries)
                    self.waiting.popleft()
                    target.finish(self, b"409", b"Message Size Exceeds MaxBytes", target.pending_headers())
                    continue
                self._deliver(stored, deliveries, target, message, size)
        finally:
            self._pumping = False
        if self.waiting:
            self._finish_no_wait()

    def _target(self):
        """Where the next message goes: the deliver topic (push) or the oldest
        pull request; None if nowhere right now."""
        if self.deliver_topic is not None:
            if self._flow_reply is not None and self._flow_bytes >= FLOW_CONTROL_WINDOW:
                return None  # stalled until the client answers flow control
            if not self.broker.router.has_interest(self.deliver_topic):
                return None
            return self.deliver_topic
        waiting = self.waiting
        now = self.clock.seconds()
        while waiting:
            request = waiting[0]
            if request.expired(now):  # nats-server checks the expiry as it delivers
                waiting.popleft()
                self._time_out(request)
                continue
            if request.batch > 0 and self.broker.router.has_interest(request.reply):
                return request
            waiting.popleft()
            request.cancel_timer()
        return None

    def _next_message(self):
        """(stored message, delivery count) of what goes next, or (None, 0)."""
        redeliver = self._redeliver
        while redeliver:
            seq = redeliver[0]
            entry = self.pending.get(seq)
            if entry is None or entry.deadline:
                redeliver.popleft()
                continue
            stored = self.store.get(seq)
            redeliver.popleft()
            if stored is None:  # removed meanwhile (limits, purge): nothing to redeliver
                self._forget(seq)
                continue
            return stored, entry.deliveries + 1
        if not self.ack_none and 0 < self.max_ack_pending <= len(self.pending):
            return None, 0
        lps = self._last_per_subject
        while self._last_per_subject_sent < len(lps):
            stored = self.store.get(lps[self._last_per_subject_sent])
            self._last_per_subject_sent += 1
            if stored is not None:
                self._from_last_per_subject = True
                return stored, 1
        if lps:  # all sent: let the list go
            self._last_per_subject, self._last_per_subject_sent = [], 0
        self._from_last_per_subject = False
        stored = self._next_stored(self.next_seq)
        if stored is None:
            return None, 0
        self.next_seq = stored.seq + 1
        if self._log_pending is not None:
            self._log_pending -= 1
        return stored, 1

    def _unread(self, stored, deliveries: int) -> None:
        """Put back what ``_next_message`` just gave: it goes next time."""
        if deliveries > 1:
            self._redeliver.appendleft(stored.seq)
        elif self._from_last_per_subject:
            self._last_per_subject_sent -= 1
        else:
            self.next_seq = stored.seq
            if self._log_pending is not None:
                self._log_pending += 1

    def _next_stored(self, start: int):
        if self.filters is None:
            return self.store.next_message(start)
        found = None
        for topic_filter in self.filters:
            stored = self.store.next_message(start, topic_filter)
            if stored is not None and (found is None or stored.seq < found.seq):
                found = stored
        return found

    def _outgoing(self, stored, deliveries: int) -> Message:
        """The delivery of ``stored`` as the next consumer seq: under its own
        subject, with its ack reply subject (and only its headers if so configured)."""
        reply = self._ack_prefix + "%d/%d/%d/%d/%d" % (
            deliveries, stored.seq, self.delivered_consumer_seq + 1, stored.timestamp, self.num_pending())
        payload = stored.payload
        headers = stored.headers
        if self.headers_only:
            headers = (headers or ()) + (("Nats-Msg-Size", str(len(payload))),)
            payload = b""
        return Message(stored.topic, payload, headers, reply)

    def _size(self, message) -> int:
        """A delivery's bytes as nats-server counts them for a pull request's
        max_bytes and for flow control: subject + ack reply subject + header
        block + payload (the reply's tail after our prefix is digits and dots)."""
        headers = message.headers
        return (len(topic_to_subject(message.topic)) + self._ack_subject_length
                + len(message.reply_to) - len(self._ack_prefix)
                + header_block_length(headers) + len(message.payload))

    def _deliver(self, stored, deliveries: int, target, message, size: int) -> None:
        self.delivered_consumer_seq += 1
        consumer_seq = self.delivered_consumer_seq
        seq = stored.seq
        if seq > self.delivered_stream_seq:
            self.delivered_stream_seq = seq
        now = time.time_ns()
        self.last_active = self._last_delivered = now
        if self.ack_none:
            self.ack_floor_consumer_seq, self.ack_floor_stream_seq = consumer_seq, self.delivered_stream_seq
        else:
            deadline = now + self._wait_for(deliveries)
            entry = self.pending.get(seq)
            if entry is None:
                self.pending[seq] = _Pending(consumer_seq, deliveries, deadline)
            else:
                entry.consumer_seq, entry.deliveries, entry.deadline = consumer_seq, deliveries, deadline
            self._push_deadline(deadline, seq)
        if isinstance(target, PullRequest):
            target.took(size)
            target.last_sent = now
            if target.done:
                self.waiting.popleft()
                target.cancel_timer()
            self.broker.deliver_to(target.reply, message)
        else:
            self.broker.deliver_to(target, message)
            if self.flow_control:
                self._flow_bytes += size
                if self._flow_reply is None and self._flow_bytes >= FLOW_CONTROL_WINDOW:
                    self._ask_flow_control()
        self.stream.service.consumer_changed(self)

    def _wait_for(self, deliveries: int) -> int:
        backoff = self.backoff
        if backoff:
            return backoff[min(deliveries, len(backoff)) - 1]
        return self.ack_wait

    # -- push extras: flow control and heartbeats ------------------------------

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
        self._heartbeat = self.clock.callLater(self.idle_heartbeat / 1e9, self._send_heartbeat)
        if time.time_ns() - self.last_active < self.idle_heartbeat:
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
        self.last_active = time.time_ns()
        refusal = request.exceeds(self.config)
        if refusal is not None:
            request.finish(self, b"409", refusal)
            return
        if request.no_wait and not request.expires and not self._redeliver and not self.num_pending():
            request.finish(self, b"404", b"No Messages")
            return
        if len(self.waiting) >= self.config.get("max_waiting", 512):
            request.finish(self, b"409", b"Exceeded MaxWaiting")
            return
        self.waiting.append(request)
        request.start_timer(self)
        self.pump()

    def _finish_no_wait(self) -> None:
        """no_wait requests end at the end of the stream: 404 No Messages
        (one that set expires and got nothing yet keeps waiting)."""
        if self._redeliver or self.num_pending():
            return
        for request in list(self.waiting):
            if request.no_wait and (not request.expires or request.delivered):
                self.waiting.remove(request)
                request.finish(self, b"404", b"No Messages")

    def request_expired(self, request) -> None:
        if request in self.waiting:
            self.waiting.remove(request)
            self._time_out(request)

    def _time_out(self, request) -> None:
        request.finish(self, b"408", b"Request Timeout", request.pending_headers())

    # -- acknowledgements ---------------------------------------------------------

    def acknowledge(self, seq: int, body: bytes, reply) -> None:
        """The ack verb ``body`` for the delivery of stream seq ``seq``, read
        as nats-server's processAck does: an empty body, +ACK or +OK (exactly)
        acks; -NAK, +NXT and +TERM are prefixes (what follows is their
        argument); +WPI must stand alone; any other body is ignored."""
        if not body or body == _ACK or body == _OK:
            self._ack(seq)
        elif body.startswith(_NEXT):
            self._ack(seq)
            if reply is not None:
                self.request_next(reply, body[len(_NEXT):])
        elif body.startswith(_NAK):
            self._nak(seq, body[len(_NAK):])
        elif body == _PROGRESS:
            entry = self.pending.get(seq)
            if entry is not None and entry.deadline:
                self._set_deadline(seq, entry, time.time_ns() + self._wait_for(entry.deliveries))
        elif body.startswith(_TERM):
            if seq in self.pending:
                self._settle([seq])
        else:
            return
        self.pump()

    def _ack(self, seq: int) -> None:
        if self.ack_all:
            done = [s for s in self.pending if s <= seq]
        elif seq in self.pending:
            done = [seq]
        else:
            return
        self._settle(done)

    def _settle(self, seqs) -> None:
        """These deliveries are done with (acked, terminated or out of tries)."""
        self._last_acked = time.time_ns()
        for seq in seqs:
            self._forget(seq)
        self.stream.acknowledged(self, seqs)

    def _forget(self, seq: int) -> None:
        self.pending.pop(seq, None)
        self._compact_deadlines()
        if self.pending:
            first_seq, first = next(iter(self.pending.items()))
            self.ack_floor_stream_seq = first_seq - 1
            self.ack_floor_consumer_seq = first.consumer_seq - 1
        else:
            self.ack_floor_stream_seq = self.delivered_stream_seq
            self.ack_floor_consumer_seq = self.delivered_consumer_seq
        self.stream.service.consumer_changed(self)

    def prune(self) -> None:
        """After a purge: forget deliveries of messages that are gone, and move
        past the purged range (nats-server's consumer purge)."""
        first = self.store.state().first_seq
        for seq in [s for s in self.pending if self.store.get(s) is None]:
            self._forget(seq)
        if self.next_seq < first:
            self.next_seq = first
        self._log_pending = None
        if first - 1 > self.delivered_stream_seq:
            self.delivered_stream_seq = first - 1
        if not self.pending:
            self.ack_floor_stream_seq = max(self.ack_floor_stream_seq, self.delivered_stream_seq)
        self.stream.service.consumer_changed(self)
        self.pump()

    def _nak(self, seq: int, argument: bytes) -> None:
        entry = self.pending.get(seq)
        if entry is None:
            return
        delay = nak_delay(argument)
        if delay > 0:
            self._set_deadline(seq, entry, time.time_ns() + delay)
        else:
            self._due(seq, entry)

    def _set_deadline(self, seq: int, entry, deadline: int) -> None:
        entry.deadline = deadline
        self._push_deadline(deadline, seq)

    def _push_deadline(self, deadline: int, seq: int) -> None:
        self._compact_deadlines()
        heapq.heappush(self._deadlines, (deadline, seq))
        # A -NAK delay or a backoff step can fall before what the timer waits for.
        if self._timer is None or deadline < self._timer_due:
            self._arm_timer()

    def _compact_deadlines(self) -> None:
        """Entries made stale by acks and +WPI are dropped once they outnumber
        the live ones, so the heap stays O(pending) (amortised O(1) each)."""
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self.pending) + 64:
            deadlines[:] = [(e.deadline, s) for s, e in self.pending.items() if e.deadline]
            heapq.heapify(deadlines)

    def _due(self, seq: int, entry) -> None:
        """Queue a pending message for redelivery, or give up on it after max_deliver."""
        if 0 < self.max_deliver <= entry.deliveries:
            self._forget(seq)  # no more tries; the stream keeps it (nats-server does not ack it)
            return
        entry.deadline = 0
        self._redeliver.append(seq)

    def _arm_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._deadlines and not self.deleted:
            self._timer_due = self._deadlines[0][0]
            delay = max(0.0, (self._timer_due - time.time_ns()) / 1e9)
            self._timer = self.clock.callLater(delay, self._deadlines_passed)

    def _deadlines_passed(self) -> None:
        self._timer = None
        now = time.time_ns()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, seq = heapq.heappop(deadlines)
            entry = self.pending.get(seq)
            if entry is not None and entry.deadline == deadline:
                self._due(seq, entry)
        self._arm_timer()
        self.pump()

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
            active = bool(self.waiting) or time.time_ns() - self.last_active < self.inactive_threshold
        now = time.time_ns()
        if active:
            self._inactive_since = None
        elif self._inactive_since is None:
            self._inactive_since = now
        elif now - self._inactive_since >= self.inactive_threshold:
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
            "num_ack_pending": len(self.pending),
            "num_redelivered": sum(1 for entry in self.pending.values() if entry.deliveries > 1),
            "num_waiting": len(self.waiting), "num_pending": self.num_pending(), "ts": rfc3339(time.time_ns()),
        }
        if push_bound:
            document["push_bound"] = True
        return document

    def state(self) -> dict:
        """What survives a restart (the pending ones are redelivered after it)."""
        return {
            "next_seq": self.next_seq,
            "delivered": [self.delivered_consumer_seq, self.delivered_stream_seq],
            "ack_floor": [self.ack_floor_consumer_seq, self.ack_floor_stream_seq],
            "pending": [[seq, entry.consumer_seq, entry.deliveries] for seq, entry in self.pending.items()],
            "last_per_subject": self._last_per_subject[self._last_per_subject_sent:],
        }

    def restore(self, state: dict) -> None:
        self.next_seq = state["next_seq"]
        self.delivered_consumer_seq, self.delivered_stream_seq = state["delivered"]
        self.ack_floor_consumer_seq, self.ack_floor_stream_seq = state["ack_floor"]
        self._last_per_subject = list(state.get("last_per_subject", ()))
        self._log_pending = None
        for seq, consumer_seq, deliveries in state["pending"]:
            entry = self.pending[seq] = _Pending(consumer_seq, deliveries, 0)
            self._due(seq, entry)  # not acked before the restart: deliver again


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
