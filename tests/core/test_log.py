"""The core Log against a real Broker and store, on a task.Clock: topics
taken in (all or none), retention by limits / interest / work queue, expiry,
the de-duplication rule, the registry's namespaces, and publishers' receipts."""

from __future__ import annotations

import errno
import glob
import os

import pytest
from twisted.internet import task

from flowmq import config
from flowmq.core.broker import Broker
from flowmq.core.message import Message
from flowmq.core.receipts import Receipt
from flowmq.core.store import FileStore, LimitExceeded, Limits
from flowmq.core.streams.log import Log, WriteFailed
from flowmq.core.streams.rules import Deduplicate, IngestRule, Refused
from flowmq.core.topics import InvalidTopic

SECOND = 1_000_000_000


@pytest.fixture
def core(tmp_path):
    """A started Broker on a task.Clock (fsync always), and the clock, at t=1000 s."""
    clock = task.Clock()
    clock.advance(1000)
    settings = config.load(None, {"broker.data_dir": str(tmp_path), "storage.fsync": "always"})
    broker = Broker(settings, clock)
    broker.startService()
    yield broker, clock
    broker.stopService()


def open_store(broker, kind, name, limits):
    """The engine's store for a log, in the kind's namespace."""
    return broker.storage.open_stream(kind, name, limits, "file")


def make_log(core, name="orders", filters=("orders/#",), limits=None, retention="limits", rules=(),
             answers=None, kind="kafka"):
    broker, clock = core
    limits = limits or Limits()
    log = Log(kind, name, open_store(broker, kind, name, limits), broker, retention, rules, answers,
              now=lambda: int(clock.seconds() * SECOND))
    log.configure(filters, limits, retention)
    log.attach()
    return log


def publish(broker, topic, payload=b"x", headers=None, receipt=None):
    message = Message(topic, payload, headers)
    message.receipt = receipt
    broker.publish(message)
    return message


def seqs(log):
    found, seq = [], 1
    while True:
        stored = log.store.next_message(seq)
        if stored is None:
            return found
        found.append(stored.seq)
        seq = stored.seq + 1


class Reader:
    """A consumer of a log as the Log sees one: its filter and what it acknowledged."""

    def __init__(self, log, name, prefix=""):
        self.log, self.prefix = log, prefix
        self.acked = set()
        self.appended = self.removed = 0
        log.consumers[name] = self

    def wants(self, topic):
        return topic.startswith(self.prefix)

    def has_acknowledged(self, seq):
        return seq in self.acked

    def on_append(self, topic):
        self.appended += 1

    def on_removed(self, seq, topic):
        self.removed += 1

    def ack(self, *acked):
        self.acked.update(acked)
        self.log.acknowledged(self, acked)


class Answers:
    """A protocol adapter's answers: what the log accepted and refused, and when written."""

    def __init__(self):
        self.accepted_, self.refused_, self.written = [], [], []

    def accepted(self, message, seq, duplicate):
        self.accepted_.append((seq, duplicate))
        return lambda error: self.written.append((seq, error))

    def refused(self, message, error):
        self.refused_.append(error)


def test_a_log_takes_in_its_topics_from_any_publisher_and_is_found_by_kind_and_name(core):
    broker, _clock = core
    log = make_log(core)
    other = make_log(core, kind="amqp", filters=("orders/eu",))  # the same name in another kind
    publish(broker, "orders/eu")
    publish(broker, "invoices/eu")
    assert seqs(log) == [1] and seqs(other) == [1]
    assert broker.logs.get("kafka", "orders") is log and broker.logs.get("amqp", "orders") is other
    with pytest.raises(ValueError):
        make_log(core, filters=("x/#",))  # a second "kafka" log named "orders"
    log.detach()
    publish(broker, "orders/eu")
    assert seqs(log) == [1] and broker.logs.get("kafka", "orders") is None


def test_new_topics_are_taken_all_or_none(core):
    broker, _clock = core
    log = make_log(core)
    too_deep = "/".join(["a"] * (broker.router.max_levels + 1))
    with pytest.raises(InvalidTopic):
        log.configure(("invoices/#", too_deep), Limits(), "limits")
    publish(broker, "invoices/1")
    publish(broker, "orders/1")
    assert seqs(log) == [1] and log.filters == ("orders/#",)
    log.configure(("invoices/#",), Limits(), "limits")
    publish(broker, "invoices/2")
    publish(broker, "orders/2")
    assert [log.store.get(seq).topic for seq in seqs(log)] == ["orders/1", "invoices/2"]


def test_limits_retention_keeps_acknowledged_messages(core):
    broker, _clock = core
    log = make_log(core)
    reader = Reader(log, "r")
    publish(broker, "orders/1")
    reader.ack(1)
    assert seqs(log) == [1] and reader.appended == 1


def test_interest_retention_drops_a_message_once_everyone_interested_acknowledged(core):
    broker, _clock = core
    log = make_log(core, retention="interest")
    everything = Reader(log, "all", "orders/")
    eu_only = Reader(log, "eu", "orders/eu")
    publish(broker, "orders/eu")  # 1: both want it
    publish(broker, "orders/us")  # 2: only "all"
    publish(broker, "invoices/x")  # not a topic of the log
    everything.ack(1, 2)
    assert seqs(log) == [1]  # "eu" still wants 1
    eu_only.ack(1)
    assert seqs(log) == [] and everything.removed == 2


def test_interest_retention_keeps_nothing_nobody_wants_and_forgets_a_consumer_that_goes(core):
    broker, _clock = core
    log = make_log(core, retention="interest")
    publish(broker, "orders/eu")  # no consumer: not kept
    assert seqs(log) == []
    everything = Reader(log, "all", "orders/")
    eu_only = Reader(log, "eu", "orders/eu")
    publish(broker, "orders/eu")  # 2
    everything.ack(2)
    del log.consumers["eu"]
    log.forget_interest(1)  # "eu" acknowledged nothing
    assert seqs(log) == [] and eu_only.removed == 0


def test_work_queue_retention_drops_a_message_once_one_consumer_acknowledged(core):
    broker, _clock = core
    log = make_log(core, retention="workqueue")
    first = Reader(log, "a", "orders/")
    Reader(log, "b", "orders/")
    publish(broker, "orders/1")
    publish(broker, "orders/2")
    first.ack(2)
    assert seqs(log) == [1]


def test_max_age_expires_on_the_reactor_clock(core):
    broker, clock = core
    log = make_log(core, limits=Limits(max_age=3 * SECOND))
    publish(broker, "orders/1")
    clock.advance(2)
    publish(broker, "orders/2")
    clock.advance(1)  # t+3: the first is 3 s old
    assert seqs(log) == [2]
    publish(broker, "orders/3")
    log.detach()  # a detached log expires nothing
    clock.advance(10)
    assert seqs(log) == [2, 3]


def _header_id(item):
    return dict(item.headers or ()).get("id")


def test_deduplicate_rule_stores_a_message_id_once_within_its_window(core):
    broker, clock = core
    answers = Answers()
    log = make_log(core, rules=[Deduplicate(_header_id, 10 * SECOND)], answers=answers)
    publish(broker, "orders/1", headers=(("id", "a"),))
    publish(broker, "orders/1", headers=(("id", "a"),))
    publish(broker, "orders/1", headers=(("id", "b"),))
    publish(broker, "orders/1")  # no id: never a duplicate
    assert seqs(log) == [1, 2, 3]
    assert answers.accepted_ == [(1, False), (1, True), (2, False), (3, False)]
    clock.advance(11)  # past the window: "a" is new again
    publish(broker, "orders/1", headers=(("id", "a"),))
    assert seqs(log) == [1, 2, 3, 4]


def test_deduplicate_rule_restores_its_ids_from_the_store(core):
    broker, _clock = core
    log = make_log(core, rules=[Deduplicate(_header_id, 10 * SECOND)])
    publish(broker, "orders/1", headers=(("id", "a"),))
    log.detach()
    again = make_log(core, rules=[Deduplicate(_header_id, 10 * SECOND)])  # a restart: the same store
    publish(broker, "orders/1", headers=(("id", "a"),))
    assert seqs(again) == [1]


def _on_disk(directory):
    data = b""
    for path in glob.glob(os.path.join(directory, "**", "*.log"), recursive=True):
        with open(path, "rb") as handle:
            data += handle.read()
    return data


def test_a_receipt_completes_once_the_store_has_written_the_message(core, tmp_path):
    broker, clock = core
    answers = Answers()
    make_log(core, answers=answers)
    receipt = Receipt()
    publish(broker, "orders/1", b"kept-on-disk", receipt=receipt)
    seen = []
    receipt.result().addCallback(lambda result: seen.append((result, b"kept-on-disk" in _on_disk(str(tmp_path)))))
    assert receipt.pending == 1 and seen == [] and answers.written == []
    clock.advance(0)  # the broker's write batch: flush, fsync, then after_sync
    assert seen == [(None, True)] and answers.written == [(1, None)]


def test_a_receipt_fails_at_once_when_the_log_refuses_the_message(core):
    broker, _clock = core

    class NoEmptyPayloads(IngestRule):
        def check(self, log, message):
            if not message.payload:
                raise Refused("empty")
            return None

    answers = Answers()
    make_log(core, limits=Limits(max_msgs=1, discard_new=True), rules=[NoEmptyPayloads()], answers=answers)
    outcomes = []
    for payload in (b"", b"one", b"two"):
        receipt = Receipt()
        publish(broker, "orders/1", payload, receipt=receipt)
        receipt.result().addCallbacks(outcomes.append, lambda failure: outcomes.append(failure.value))
    assert isinstance(outcomes[0], Refused) and isinstance(outcomes[1], LimitExceeded)
    assert len(outcomes) == 2  # "one" waits for the write
    assert [type(error) for error in answers.refused_] == [Refused, LimitExceeded]


def test_a_receipt_waits_for_every_log_that_takes_the_message(core):
    broker, clock = core
    make_log(core)
    make_log(core, name="full", limits=Limits(max_msgs=1, discard_new=True))
    publish(broker, "orders/0")  # fills "full"
    clock.advance(0)
    receipt = Receipt()
    publish(broker, "orders/1", receipt=receipt)
    outcomes = []
    receipt.result().addErrback(lambda failure: outcomes.append(failure.value))
    assert receipt.pending == 1 and outcomes == []  # "full" refused, "orders" still writing
    clock.advance(0)
    assert len(outcomes) == 1 and isinstance(outcomes[0], LimitExceeded)


def test_a_receipt_with_no_durable_destination_completes_at_once(core):
    broker, _clock = core
    make_log(core)
    receipt = Receipt()
    publish(broker, "invoices/1", receipt=receipt)
    seen = []
    receipt.result().addCallback(seen.append)
    assert seen == [None]


def test_a_receipt_fails_when_the_store_cannot_write_and_the_message_is_not_kept(core, monkeypatch):
    broker, clock = core
    answers = Answers()
    log = make_log(core, rules=[Deduplicate(_header_id, 10 * SECOND)], answers=answers)

    def full_disk(store):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileStore, "flush", full_disk)
    receipt = Receipt()
    publish(broker, "orders/1", headers=(("id", "a"),), receipt=receipt)
    outcomes = []
    receipt.result().addErrback(lambda failure: outcomes.append(failure.value))
    clock.advance(0)
    assert len(outcomes) == 1 and isinstance(outcomes[0], WriteFailed)
    assert isinstance(answers.written[0][1], WriteFailed) and seqs(log) == []
    monkeypatch.undo()
    publish(broker, "orders/1", headers=(("id", "a"),))  # the retry is stored: no duplicate of what went
    assert seqs(log) == [2]


class Faulty:
    """A consumer whose on_append raises (a bug in a protocol's consumer)."""

    def wants(self, topic):
        return True

    def has_acknowledged(self, seq):
        return False

    def on_append(self, topic):
        raise RuntimeError("consumer bug")

    def on_removed(self, seq, topic):
        pass


def test_a_failing_consumer_neither_answers_the_publisher_before_the_write_nor_stops_the_others(core):
    """Before: the receipt's hold and the answer were taken after the
    consumers were told, so a raising on_append completed the receipt with
    None at once (before any fsync), sent no PubAck, and the consumers after
    it never heard of the message."""
    broker, clock = core
    answers = Answers()
    log = make_log(core, answers=answers)
    log.consumers["bad"] = Faulty()
    good = Reader(log, "good")
    receipt = Receipt()
    publish(broker, "orders/1", receipt=receipt)
    seen = []
    receipt.result().addCallback(seen.append)
    assert good.appended == 1 and receipt.pending == 1 and seen == [] and answers.written == []
    clock.advance(0)  # the write
    assert seen == [None] and answers.written == [(1, None)]


def test_a_failing_answer_does_not_strand_the_rest_of_the_write(core):
    """Before: the first raising answer of a flush left the later ones (and
    their receipts) unanswered for good, their entries already cut."""
    broker, clock = core

    class FirstFails(Answers):
        def accepted(self, message, seq, duplicate):
            written = super().accepted(message, seq, duplicate)
            if seq == 1:
                def failing(error):
                    raise RuntimeError("answer bug")
                return failing
            return written

    answers = FirstFails()
    make_log(core, answers=answers)
    other = FirstFails()
    make_log(core, name="other", filters=("orders/#",), answers=other, kind="amqp")
    receipts = [Receipt() for _ in range(3)]
    outcomes = []
    for receipt in receipts:
        publish(broker, "orders/1", receipt=receipt)
        receipt.result().addCallback(outcomes.append)
    clock.advance(0)
    assert outcomes == [None, None, None]
    assert answers.written == [(2, None), (3, None)] and other.written == [(2, None), (3, None)]


def test_a_log_whose_write_answer_fails_does_not_strand_the_other_logs_of_that_flush(core, monkeypatch):
    """Before: the registry's after_sync stopped at the first log whose
    ``written`` raised, and the later logs of that flush were never answered."""
    broker, clock = core

    class BrokenForget(IngestRule):
        def unwritten(self, log, seqs):
            raise RuntimeError("rule bug")

    make_log(core, name="first", rules=[BrokenForget()])
    answers = Answers()
    make_log(core, name="second", answers=answers)
    monkeypatch.setattr(FileStore, "flush", lambda store: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    receipt = Receipt()
    publish(broker, "orders/1", receipt=receipt)
    outcomes = []
    receipt.result().addErrback(lambda failure: outcomes.append(failure.value))
    clock.advance(0)
    assert [type(error) for _seq, error in answers.written] == [WriteFailed]
    assert len(outcomes) == 1 and isinstance(outcomes[0], WriteFailed)
