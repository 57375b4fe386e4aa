"""A publisher's receipt: did every destination that keeps the message store it?

A publisher that must know (MQTT PUBACK at QoS 1, AMQP publisher confirms,
Kafka acks=all, ...) sets ``message.receipt = Receipt()`` before
``broker.publish(message)``. Each durable destination that takes the message
calls ``done = receipt.hold()`` while the message is delivered to it, and
later ``done(None)`` once the message is stored under the fsync policy, or
``done(error)`` if it was refused or could not be written. Destinations that
keep nothing (plain subscribers) do not hold it.

When ``broker.publish`` has returned, every hold has been taken (delivery is
synchronous), and ``receipt.result()`` is a Deferred that fires once every
hold is done: with None when all stored the message, or with the Failure of
the first error when any did not (the others still complete first, so the
publisher learns the outcome once). With no holds at all (nothing durable
matched) it has fired already.
"""

from __future__ import annotations

from twisted.internet import defer


class Receipt:
    """Counts the destinations still storing one message; see the module docstring."""

    __slots__ = ("_holds", "_error", "_result")

    def __init__(self):
        self._holds = 0
        self._error = None
        self._result = None  # the Deferred, once result() was asked

    def hold(self):
        """A destination keeps the message: returns its ``done(error)``
        callable, to be called exactly once (error None: stored)."""
        if self._result is not None and self._result.called:
            raise RuntimeError("the receipt's result is already out")
        self._holds += 1
        called = []

        def done(error=None) -> None:
            if called:
                raise RuntimeError("a receipt's hold is done once")
            called.append(True)
            self._done(error)

        return done

    def _done(self, error) -> None:
        if error is not None and self._error is None:
            self._error = error
        self._holds -= 1
        if not self._holds and self._result is not None:
            self._fire()

    @property
    def pending(self) -> int:
        """How many destinations have not said yet."""
        return self._holds

    @property
    def stored(self) -> bool:
        """Has every destination stored the message already (no hold
        pending, none failed)? A publisher can answer at once then, without
        a Deferred: the common case of a message nothing durable keeps."""
        return not self._holds and self._error is None

    def result(self) -> defer.Deferred:
        """A Deferred that fires once every hold is done (None, or the first
        error's Failure). Ask for it after ``broker.publish`` returned."""
        if self._result is None:
            self._result = defer.Deferred()
            if not self._holds:
                self._fire()
        return self._result

    def _fire(self) -> None:
        if self._error is None:
            self._result.callback(None)
        else:
            self._result.errback(self._error)
