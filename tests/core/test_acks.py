"""The core consumer's acknowledgement rules (flowmq/core/streams/acks.py and
consumer.py), driven by twisted.internet.task.Clock: no real sleeps.

A consumer reads a MemoryStore and delivers to targets with credit; each
test moves the clock and looks at what the targets received.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from flowmq.core.store import MemoryStore
from flowmq.core.streams.consumer import ACK_ALL, ACK_NONE, UNLIMITED, Consumer, IConsumerTarget


@implementer(IConsumerTarget)
class Target:
    """A target that takes ``credit`` messages (then waits for more credit)."""

    def __init__(self, credit=UNLIMITED):
        self.left = credit
        self.got = []  # (seq, deliveries, consumer seq)

    def credit(self):
        return self.left

    def deliver(self, delivery):
        self.left -= 1
        self.got.append((delivery.stored.seq, delivery.deliveries, delivery.consumer_seq))
        return True

    def seqs(self):
        return [seq for seq, _n, _c in self.got]


class Recorder(Consumer):
    """A core consumer that records what its hooks hear."""

    def __init__(self, *args, **kwargs):
        self.dead = []
        self.settled_seqs = []
        Consumer.__init__(self, *args, **kwargs)

    def dead_letter(self, seq, deliveries):
        self.dead.append((seq, deliveries))

    def settled(self, seqs):
        self.settled_seqs.extend(seqs)


def _setup(messages=3, **options):
    clock = Clock()
    store = MemoryStore()
    for i in range(messages):
        store.append("t/%d" % i, None, b"m%d" % i)
    consumer = Recorder(store, clock, **options)
    consumer.start("all")
    target = Target()
    consumer.attach(target)
    return clock, store, consumer, target


def test_a_target_with_credit_two_gets_two_and_then_waits():
    clock = Clock()
    store = MemoryStore()
    for i in range(5):
        store.append("t", None, b"x")
    consumer = Consumer(store, clock)
    consumer.start("all")
    target = Target(credit=2)
    verifyObject(IConsumerTarget, target)
    consumer.attach(target)
    assert target.seqs() == [1, 2]
    store.append("t", None, b"y")
    consumer.appended("t")
    assert target.seqs() == [1, 2]
    target.left = 1  # one more credit (an AMQP basic.ack freeing prefetch, say)
    consumer.pump()
    assert target.seqs() == [1, 2, 3]
    assert consumer.num_pending() == 3


def test_credit_goes_to_the_first_target_that_has_some():
    clock = Clock()
    store = MemoryStore()
    for i in range(4):
        store.append("t", None, b"x")
    consumer = Consumer(store, clock)
    consumer.start("all")
    full, other = Target(credit=0), Target(credit=3)
    consumer.attach(full)
    consumer.attach(other)
    assert full.seqs() == [] and other.seqs() == [1, 2, 3]


def test_redelivery_after_the_ack_wait_and_not_before():
    clock, _store, consumer, target = _setup(ack_wait=30.0)
    assert target.seqs() == [1, 2, 3]
    consumer.ack(2)
    clock.advance(29.9)
    assert len(target.got) == 3
    clock.advance(0.2)
    assert target.got[3:] == [(1, 2, 4), (3, 2, 5)]
    assert consumer.acks.pending[1].deliveries == 2


def test_backoff_steps_set_each_redelivery_wait():
    clock, _store, consumer, target = _setup(messages=1, ack_wait=30.0, backoff=(1.0, 5.0, 20.0))
    times = []
    for _ in range(40):
        count = len(target.got)
        clock.advance(0.5)
        if len(target.got) > count:
            times.append(clock.seconds())
    for _ in range(60):
        count = len(target.got)
        clock.advance(1.0)
        if len(target.got) > count:
            times.append(clock.seconds())
    # First delivery at 0; waits of 1, 5, 20, then the last step repeats.
    assert times[:4] == [1.0, 6.0, 26.0, 46.0], times


def test_nak_with_a_delay_redelivers_after_the_delay_not_the_ack_wait():
    clock, _store, consumer, target = _setup(messages=1, ack_wait=30.0)
    consumer.nak(1, delay=2.0)
    clock.advance(1.9)
    assert len(target.got) == 1
    clock.advance(0.2)
    assert target.got[-1] == (1, 2, 2)


def test_nak_without_delay_redelivers_at_once():
    _clock, _store, consumer, target = _setup(messages=2, ack_wait=30.0)
    consumer.nak(2)
    assert target.got[-1] == (2, 2, 3)


def test_in_progress_starts_the_ack_wait_again():
    clock, _store, consumer, target = _setup(messages=1, ack_wait=10.0)
    clock.advance(8)
    consumer.in_progress(1)
    clock.advance(8)  # 16 s after the delivery, 8 after the signal
    assert len(target.got) == 1
    clock.advance(2.1)
    assert len(target.got) == 2


def test_term_never_delivers_again_and_settles():
    clock, _store, consumer, target = _setup(messages=2, ack_wait=5.0)
    consumer.term(1)
    assert consumer.settled_seqs == [1]
    clock.advance(6)
    assert [seq for seq, n, _c in target.got if n > 1] == [2]


def test_max_deliveries_calls_the_dead_letter_hook():
    clock, _store, consumer, target = _setup(messages=1, ack_wait=1.0, max_deliver=3)
    for _ in range(10):
        clock.advance(1.0)
    assert [n for _seq, n, _c in target.got] == [1, 2, 3]
    assert consumer.dead == [(1, 3)]
    assert not consumer.acks.pending
    assert consumer.ack_floor_stream_seq == 1 and consumer.ack_floor_consumer_seq == 3


def test_ack_all_acknowledges_everything_up_to_the_sequence():
    clock, _store, consumer, target = _setup(messages=5, ack_policy=ACK_ALL, ack_wait=5.0)
    consumer.ack(3)
    assert consumer.settled_seqs == [1, 2, 3]
    assert list(consumer.acks.pending) == [4, 5]
    assert consumer.ack_floor_stream_seq == 3
    clock.advance(6)
    assert [seq for seq, n, _c in target.got if n > 1] == [4, 5]


def test_ack_up_to_with_explicit_acks():
    _clock, _store, consumer, _target = _setup(messages=4)
    consumer.ack_up_to(2)
    assert list(consumer.acks.pending) == [3, 4] and consumer.ack_floor_stream_seq == 2


def test_ack_none_has_nothing_pending():
    clock, _store, consumer, target = _setup(messages=3, ack_policy=ACK_NONE)
    clock.advance(100)
    assert target.seqs() == [1, 2, 3] and not consumer.acks.pending
    assert consumer.ack_floor_stream_seq == 3


def test_max_ack_pending_stops_new_messages_not_redeliveries():
    clock, store, consumer, target = _setup(messages=4, ack_wait=5.0, max_ack_pending=2)
    assert target.seqs() == [1, 2]
    clock.advance(5.1)
    assert target.seqs() == [1, 2, 1, 2]
    consumer.ack(1)
    assert target.seqs() == [1, 2, 1, 2, 3]


def test_an_acked_message_leaves_no_timer_behind():
    clock, _store, consumer, _target = _setup(messages=3, ack_wait=5.0)
    for seq in (1, 2, 3):
        consumer.ack(seq)
    clock.advance(10)
    assert not clock.getDelayedCalls() or all(not c.active() for c in clock.getDelayedCalls())


def test_a_removed_pending_message_is_not_redelivered():
    clock, store, consumer, target = _setup(messages=2, ack_wait=5.0)
    store.delete(1)
    clock.advance(5.1)
    assert [seq for seq, n, _c in target.got if n > 1] == [2]
    assert list(consumer.acks.pending) == [2]
