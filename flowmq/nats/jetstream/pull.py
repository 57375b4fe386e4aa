"""One pull request of a pull consumer (``$JS.API.CONSUMER.MSG.NEXT``).

The request body is ``{"batch": n, "expires": ns, "no_wait": bool,
"max_bytes": n}`` or just a number (the batch); messages go to the
request's reply subject until the batch or max_bytes is used up, and the
request ends with a status message: 404 No Messages (no_wait at the end of
the stream), 408 Request Timeout (expired), 409 (max_bytes, max_waiting,
consumer deleted).
"""

from __future__ import annotations

import json

from flowmq.nats.jetstream.wire import status_message

#: Largest batch one request may ask for.
MAX_BATCH = 1_000_000


class PullRequest:
    __slots__ = ("reply", "batch", "max_bytes", "expires", "no_wait", "delivered", "_timer")

    def __init__(self, reply: str, batch: int, max_bytes: int, expires: int, no_wait: bool):
        self.reply = reply
        self.batch = batch
        self.max_bytes = max_bytes or None  # bytes left; None: no limit
        self.expires = expires  # ns; 0: never
        self.no_wait = no_wait
        self.delivered = 0
        self._timer = None

    @classmethod
    def parse(cls, consumer, reply: str, body: bytes) -> "PullRequest":
        """ValueError for a body that is not a pull request."""
        body = body.strip()
        if not body:
            return cls(reply, 1, 0, 0, False)
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
        for value in (batch, max_bytes, expires):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("not a pull request")
        if not 0 < batch <= MAX_BATCH:
            raise ValueError("batch out of range")
        return cls(reply, batch, max_bytes, expires, bool(document.get("no_wait")))

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

    def fits(self, size: int) -> bool:
        return self.max_bytes is None or size <= self.max_bytes

    def took(self, size: int) -> None:
        """One message of ``size`` bytes went out; ``done`` tells if that was the last."""
        self.batch -= 1
        self.delivered += 1
        if self.max_bytes is not None:
            self.max_bytes -= size

    @property
    def done(self) -> bool:
        return self.batch <= 0 or self.max_bytes == 0

    def start_timer(self, consumer) -> None:
        if self.expires:
            self._timer = consumer.clock.callLater(self.expires / 1e9, consumer.request_expired, self)

    def cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def finish(self, consumer, status: bytes, description: bytes, headers=()) -> None:
        """End the request with a status message to its reply subject."""
        self.cancel_timer()
        consumer.broker.deliver_to(self.reply, status_message(self.reply, status, description, headers))
