"""The core Consumer's pump against a memory store, on a task.Clock: a
target that raises loses no message."""

from __future__ import annotations

from twisted.internet import task

from flowmq.core.store.memory import MemoryStore
from flowmq.core.streams.consumer import UNLIMITED, Consumer


class Target:
    """A delivery target that fails ``failures`` times, then takes everything."""

    def __init__(self, failures):
        self.failures = failures
        self.taken = []

    def credit(self):
        return UNLIMITED

    def deliver(self, delivery):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("target bug")
        self.taken.append((delivery.stored.seq, delivery.deliveries))
        return True


def test_a_target_that_raises_loses_no_message():
    """Before: the message taken from the cursor was dropped for this
    consumer when the target raised (never delivered, never pending), and
    the exception escaped the pump."""
    store = MemoryStore()
    for payload in (b"a", b"b"):
        store.append("t", None, payload, 1)
    consumer = Consumer(store, task.Clock())
    target = Target(failures=1)
    consumer.attach(target)  # pumps: the first delivery raises, the round ends
    assert target.taken == [] and consumer.num_pending() == 2
    consumer.pump()
    assert target.taken == [(1, 1), (2, 1)] and consumer.num_pending() == 0
