"""A durable consumer's files (flowmq/core/streams/state.py): the configuration
written once, the state as a journal of small records compacted into
snapshots. A core consumer (flowmq/core/streams/consumer.py) on a MemoryStore
makes the state; task.Clock drives its timers.
"""

from __future__ import annotations

import os
import random

from twisted.internet.task import Clock
from zope.interface import implementer

from flowmq.core.store import MemoryStore, StorageEngine
from flowmq.core.streams import state as state_module
from flowmq.core.streams.consumer import UNLIMITED, Consumer, IConsumerTarget
from flowmq.core.streams.state import CONFIG_FILE, SNAPSHOT_FILE, ConsumerFiles

DOCUMENT = {"config": {"durable_name": "d", "ack_policy": "explicit"}, "created": 1}


@implementer(IConsumerTarget)
class Sink:
    def __init__(self, credit=UNLIMITED):
        self.left = credit

    def credit(self):
        return self.left

    def deliver(self, delivery):
        self.left -= 1
        return True


def _consumer(messages, deliver=None, ack_wait=30.0):
    """A core consumer with ``messages`` stored and ``deliver`` of them delivered."""
    store = MemoryStore()
    for i in range(messages):
        store.append("t/%d" % (i % 7), None, b"m")
    consumer = Consumer(store, Clock(), ack_wait=ack_wait)
    consumer.start("all")
    consumer.attach(Sink(messages if deliver is None else deliver))
    return consumer


def _storage(tmp_path, fsync="never"):
    """A storage engine without a thread pool: its worker's jobs run inline."""
    return StorageEngine(str(tmp_path / "data"), fsync=fsync)


def _files(tmp_path, consumer, fsync="never"):
    files = ConsumerFiles(str(tmp_path / "c"), _storage(tmp_path, fsync))
    files.create(DOCUMENT, consumer.state())
    consumer.delta()  # what the snapshot holds is saved
    return files


def _journal(files):
    return files.journal_path


def _cost_of_one_ack(tmp_path, pending):
    consumer = _consumer(pending)
    assert len(consumer.acks.pending) == pending
    files = _files(tmp_path / str(pending), consumer)
    before = files.bytes_written
    consumer.ack(pending // 2)
    files.save(consumer.delta(), consumer.state)
    assert os.path.getsize(_journal(files)) == files.bytes_written - before  # appended, nothing rewritten
    return files.bytes_written - before


def test_a_save_costs_the_same_with_10_and_100000_pending(tmp_path):
    small = _cost_of_one_ack(tmp_path, 10)
    large = _cost_of_one_ack(tmp_path, 100_000)
    # The record names the acked seq and the floor: a few more digits, no more.
    assert small < 200 and large < small + 40, (small, large)


def _cost_of_a_round(tmp_path, messages):
    """The journal bytes of one save after ``messages`` were delivered and acked since the last."""
    store = MemoryStore()
    consumer = Consumer(store, Clock())
    consumer.start("all")
    sink = Sink(0)
    consumer.attach(sink)
    files = _files(tmp_path / str(messages), consumer)
    for i in range(messages):
        store.append("t", None, b"m")
        consumer.appended("t")
    sink.left = messages
    consumer.pump()
    for seq in range(1, messages + 1):
        consumer.ack(seq)
    before = files.bytes_written
    files.save(consumer.delta(), consumer.state)
    assert ConsumerFiles(files.directory, files.storage).load("d") == consumer.state()
    return files.bytes_written - before


def test_what_is_delivered_and_acked_between_two_saves_is_not_journaled(tmp_path):
    one = _cost_of_a_round(tmp_path, 1)
    thousand = _cost_of_a_round(tmp_path, 1000)
    # Only the sequences move: a few more digits, no entry per message.
    assert thousand < one + 40, (one, thousand)


def test_the_state_read_back_is_the_state_saved(tmp_path):
    rng = random.Random(7)
    consumer = _consumer(300, deliver=120, ack_wait=5.0)
    files = _files(tmp_path, consumer)
    for _round in range(200):
        for _ in range(rng.randrange(1, 6)):
            seq = rng.randrange(1, 301)
            action = rng.randrange(4)
            if action == 0:
                consumer.ack(seq)
            elif action == 1:
                consumer.nak(seq)
            elif action == 2:
                consumer.term(seq)
            else:
                consumer.targets[0].left += 1
                consumer.pump()
        consumer.clock.advance(rng.choice((0, 1, 6)))
        files.save(consumer.delta(), consumer.state)
        assert ConsumerFiles(files.directory, files.storage).load("d") == consumer.state()
    assert ConsumerFiles(files.directory, files.storage).read_config() == DOCUMENT


def test_the_journal_is_compacted_into_a_snapshot_once_it_outgrows_it(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "COMPACT_MIN", 2048)
    consumer = _consumer(2000, deliver=50)
    files = _files(tmp_path, consumer)
    generation = files.generation
    for seq in range(1, 2001):
        consumer.ack(seq)
        consumer.targets[0].left += 1
        consumer.pump()
        files.save(consumer.delta(), consumer.state)
        journal = os.path.getsize(_journal(files)) if os.path.exists(_journal(files)) else 0
        assert journal <= max(files.snapshot_bytes, 2048)
    assert files.generation > generation + 5
    assert sorted(os.listdir(files.directory)) == sorted(
        [CONFIG_FILE, SNAPSHOT_FILE] + ([os.path.basename(_journal(files))] if os.path.exists(_journal(files)) else []))
    assert ConsumerFiles(files.directory, files.storage).load("d") == consumer.state()


def test_a_torn_tail_keeps_the_consumer_and_what_came_before(tmp_path):
    consumer = _consumer(10)
    files = _files(tmp_path, consumer)
    consumer.ack(1)
    files.save(consumer.delta(), consumer.state)
    kept = consumer.state()
    consumer.ack(2)
    files.save(consumer.delta(), consumer.state)
    size = os.path.getsize(_journal(files))
    os.truncate(_journal(files), size - 3)  # the last record, torn by a power loss
    again = ConsumerFiles(files.directory, files.storage)
    assert again.load("d") == kept
    assert again.read_config() == DOCUMENT
    first_record = again.journal_bytes
    assert os.path.getsize(_journal(files)) == first_record  # the torn bytes are cut off
    consumer.ack(3)  # and the journal goes on from there
    again.save(consumer.delta(), consumer.state)
    state = ConsumerFiles(files.directory, files.storage).load("d")
    assert [entry[0] for entry in state["pending"]] == [2] + list(range(4, 11))  # the ack of 2 was lost


def test_a_corrupt_record_ends_the_journal_there(tmp_path):
    consumer = _consumer(10)
    files = _files(tmp_path, consumer)
    consumer.ack(1)
    files.save(consumer.delta(), consumer.state)
    kept = consumer.state()
    consumer.ack(2)
    files.save(consumer.delta(), consumer.state)
    consumer.ack(3)
    files.save(consumer.delta(), consumer.state)
    # Flip a byte in the middle of the second record: the third must not be applied either.
    with open(_journal(files), "rb") as handle:
        raw = handle.read()
    first_length = int.from_bytes(raw[0:4], "little") + 8
    corrupt = bytearray(raw)
    corrupt[first_length + 12] ^= 0xFF
    with open(_journal(files), "wb") as handle:
        handle.write(bytes(corrupt))
    assert ConsumerFiles(files.directory, files.storage).load("d") == kept


def test_a_crash_in_the_middle_of_a_compaction_keeps_the_new_snapshot(tmp_path):
    consumer = _consumer(10)
    files = _files(tmp_path, consumer)
    consumer.ack(1)
    files.save(consumer.delta(), consumer.state)
    with open(_journal(files), "rb") as handle:
        old_journal = handle.read()
    old_path = _journal(files)
    consumer.ack(5)
    files._compact(consumer.state())
    with open(old_path, "wb") as handle:  # the old journal's unlink did not happen
        handle.write(old_journal)
    again = ConsumerFiles(files.directory, files.storage)
    assert again.load("d") == consumer.state()
    assert not os.path.exists(old_path)


def test_an_unreadable_snapshot_keeps_the_consumer_and_delivers_everything_again(tmp_path):
    consumer = _consumer(10)
    files = _files(tmp_path, consumer)
    with open(os.path.join(files.directory, SNAPSHOT_FILE), "wb") as handle:
        handle.write(b'{"generation": 1, "sta')
    again = ConsumerFiles(files.directory, files.storage)
    state = again.load("d")
    assert state["next_seq"] == 1 and state["pending"] == [] and state["ack_floor"] == [0, 0]
    assert ConsumerFiles(files.directory, files.storage).load("d") == state  # a good snapshot was written


def test_a_failed_save_makes_the_next_one_a_snapshot(tmp_path):
    consumer = _consumer(10)
    files = _files(tmp_path, consumer)
    consumer.ack(1)
    os.mkdir(files.journal_path)  # where the journal goes: writing it fails (EISDIR)
    try:
        files.save(consumer.delta(), consumer.state)
    except OSError:
        pass
    else:
        raise AssertionError("the save should fail")
    os.rmdir(files.journal_path)
    consumer.ack(2)
    files.save(consumer.delta(), consumer.state)  # the first ack's change is in no record: a snapshot
    assert ConsumerFiles(files.directory, files.storage).load("d") == consumer.state()


def test_numbers_no_stream_can_have_are_not_taken(tmp_path):
    """A snapshot (say, an earlier version's document) holding 2**70 starts
    the consumer again from the first message; a journal record holding one
    ends the journal there."""
    consumer = _consumer(10)
    files = ConsumerFiles(str(tmp_path / "big"), _storage(tmp_path))
    state = consumer.state()
    state["pending"] = [[2 ** 70, 1, 1]]
    files.create(DOCUMENT, state)
    assert ConsumerFiles(files.directory, files.storage).load("d")["pending"] == []

    files = _files(tmp_path, consumer)
    consumer.ack(1)
    files.save(consumer.delta(), consumer.state)
    kept = consumer.state()
    consumer.ack(2)
    delta = consumer.delta()
    delta["set"] = [[2 ** 70, 1, 1]]
    files.save(delta, consumer.state)
    assert ConsumerFiles(files.directory, files.storage).load("d") == kept


def test_a_new_consumer_of_an_old_name_does_not_inherit_its_journal(tmp_path):
    old = _consumer(10)
    files = _files(tmp_path, old)
    old.ack(1)
    files.save(old.delta(), old.state)  # journal.1.log holds the old consumer's ack
    new = _consumer(10, deliver=0)
    ConsumerFiles(files.directory, files.storage).create(DOCUMENT, new.state())
    assert ConsumerFiles(files.directory, files.storage).load("d") == new.state()
