"""One pull request of a pull consumer (``$JS.API.CONSUMER.MSG.NEXT``).

The request body is ``{"batch": n, "expires": ns, "no_wait": bool,
"max_bytes": n, "idle_heartbeat": ns}`` or just a number (the batch);
while it waits, a request with idle_heartbeat gets a "100 Idle Heartbeat"
status each interval that passes without a message; messages go to the
request's reply subject until the batch or max_bytes is used up, and the
request ends with a status message: 404 No Messages (no_wait at the end of
the stream), 408 Request Timeout (expired), 409 (max_bytes, max_waiting,
consumer deleted).

A request is a target of the core consumer (flowmq/core/streams/consumer.py):
its credit is what is left of its batch, while its requester still listens
and it has not expired.
"""

from __future__ import annotations

import json

from zope.interface import implementer

from flowmq.core.streams.consumer import IConsumerTarget
from flowmq.nats.jetstream.config import INT64_MAX
from flowmq.nats.jetstream.wire import status_message

#: Largest batch one request may ask for.
MAX_BATCH = 1_000_000


@implementer(IConsumerTarget)
class PullRequest:
    __slots__ = ("consumer", "reply", "batch", "max_bytes", "expires", "no_wait", "heartbeat", "delivered", "last_sent",
                 "_deadline", "_timer", "_beat")

    def __init__(self, consumer, reply: str, batch: int, max_bytes: int, expires: int, no_wait: bool,
                 heartbeat: int = 0):
        self.consumer = consumer  # the JetStream consumer it pulls from
        self.reply = reply
        self.batch = batch
        self.max_bytes = max_bytes or None  # bytes left; None: no limit
        self.expires = expires  # ns; 0: never
        self.no_wait = no_wait
        self.heartbeat = heartbeat  # ns; 0: none
        self.delivered = 0
        self.last_sent = 0.0  # the clock's seconds of the last message or heartbeat sent to it
        self._deadline = None  # when it expires, in the consumer's clock's seconds
        self._timer = None
        self._beat = None

    @classmethod
    def parse(cls, consumer, reply: str, body: bytes) -> "PullRequest":
        """ValueError for a body that is not a pull request."""
        body = body.strip()
        if not body:
            return cls(consumer, reply, 1, 0, 0, False)
        try:
            document = json.loads(body)
        except RecursionError:
            raise ValueError("nested too deep") from None
        if isinstance(document, int) and not isinstance(document, bool):
            document = {"batch": document}
        if not isinstance(document, dict):
            raise ValueError("not a pull request")
        batch = document.get("batch", 1)
        max_bytes = document.get("max_bytes", 0) or 0
        expires = document.get("expires", 0) or 0
        heartbeat = document.get("idle_heartbeat", 0) or 0
        for value in (batch, max_bytes, expires, heartbeat):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("not a pull request")
            if value > INT64_MAX:  # nats-server's are Go ints and durations: it refuses what does not fit
                raise ValueError("number %d does not fit int64" % value)
        if not 0 < batch <= MAX_BATCH:
            raise ValueError("batch out of range")
        if heartbeat and heartbeat * 2 > expires:  # nats-server: heartbeats need an expiry twice as long
            raise ValueError("heartbeat value too large")
        return cls(consumer, reply, batch, max_bytes, expires, bool(document.get("no_wait")), heartbeat)

    def exceeds(self, config: dict):
        """The 409 description if the request asks more than the consumer's
        max_batch, max_expires or max_bytes allow; None if it does not."""
        if 0 < config.get("max_batch", 0) < self.batch:
            return b"Exceeded MaxRequestBatch of %d" % config["max_batch"]
        if 0 < config.get("max_expires", 0) and not 0 < self.expires <= config["max_expires"]:
            return b"Exceeded MaxRequestExpires of %dms" % (config["max_expires"] // 1_000_000)
        if 0 < config.get("max_bytes", 0) and not 0 < (self.max_bytes or 0) <= config["max_bytes"]:
            return b"Exceeded MaxRequestMaxBytes of %d" % config["max_bytes"]
        return None

    def pending_headers(self) -> list:
        """What is left of the request, as nats-server tells it in a 408 or 409."""
        return [("Nats-Pending-Messages", str(self.batch)), ("Nats-Pending-Bytes", str(self.max_bytes or 0))]

    # -- as a target of the core consumer ---------------------------------------

    def credit(self) -> int:
        """What is left of the batch; 0, and the request leaves the consumer,
        once it expired (nats-server checks the expiry as it delivers: the
        timer may not have fired yet) or its requester stopped listening."""
        consumer = self.consumer
        if self.expired(consumer.clock.seconds()):
            consumer.detach(self)
            consumer.time_out(self)
            return 0
        if self.batch > 0 and consumer.broker.router.has_interest(self.reply):
            return self.batch
        consumer.detach(self)
        self.cancel_timer()
        return 0

    def deliver(self, delivery) -> bool:
        """Send one message; a message larger than the max_bytes left ends
        the request (409) and stays for the next one."""
        consumer = self.consumer
        message = consumer.outgoing(delivery)
        if self.max_bytes is not None:  # the size only counts toward max_bytes
            size = consumer.size(message)
            if size > self.max_bytes:
                consumer.detach(self)
                self.finish(b"409", b"Message Size Exceeds MaxBytes", self.pending_headers())
                return False
            self.max_bytes -= size
        self.batch -= 1
        self.delivered += 1
        self.last_sent = consumer.sent()
        if self.batch <= 0 or self.max_bytes == 0:
            consumer.detach(self)
            self.cancel_timer()
        consumer.broker.deliver_to(self.reply, message)
        return True

    # -- timers and the end ------------------------------------------------------

    def start_timer(self) -> None:
        clock = self.consumer.clock
        if self.expires:
            self._deadline = clock.seconds() + self.expires / 1e9
            self._timer = clock.callLater(self.expires / 1e9, self.consumer.request_expired, self)
        if self.heartbeat:
            self._beat = clock.callLater(self.heartbeat / 1e9, self._idle)

    def expired(self, now: float) -> bool:
        """Has the request's time run out by ``now`` (the clock's seconds)? Its
        timer may not have fired yet when a message comes in the same turn."""
        return self._deadline is not None and now >= self._deadline

    def _idle(self) -> None:
        self._beat = self.consumer.clock.callLater(self.heartbeat / 1e9, self._idle)
        now = self.consumer.clock.seconds()
        if now - self.last_sent >= self.heartbeat / 1e9:
            self.last_sent = now
            self.consumer.send_heartbeat(self.reply)

    def cancel_timer(self) -> None:
        for call in (self._timer, self._beat):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._beat = None

    def finish(self, status: bytes, description: bytes, headers=()) -> None:
        """End the request with a status message to its reply subject."""
        self.cancel_timer()
        self.consumer.broker.deliver_to(self.reply, status_message(self.reply, status, description, headers))
