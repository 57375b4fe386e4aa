"""Storage work off the reactor thread: fsync on a real thread pool, with
acknowledgements released only once it has returned; the reactor serves
others meanwhile; close waits for pending work; compaction built aside."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading

import pytest
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from flowmq import config
from flowmq.core.broker import Broker
from flowmq.core.store import Limits, StorageEngine, engine as engine_module
from flowmq.core.message import Message
from flowmq.core.streams.log import Log
from flowmq.core.streams import state as state_module
from flowmq.core.streams.state import ConsumerFiles
from tests import conftest
from tests.conftest import RawClient


class PumpedReactor:
    """What the engine and the broker need of a reactor: a Clock for timers,
    a real thread pool, and callFromThread calls queued for the test's
    thread to run (``pump``), so the order of events is the test's to see."""

    def __init__(self):
        self.clock = Clock()
        self.calls: queue.Queue = queue.Queue()
        self.pool = ThreadPool(1, 2, name="store-test")
        self.pool.start()

    def callLater(self, *args, **kwargs):
        return self.clock.callLater(*args, **kwargs)

    def seconds(self):
        return self.clock.seconds()

    def callFromThread(self, function, *args, **kwargs):
        self.calls.put((function, args, kwargs))

    def getThreadPool(self):
        return self.pool

    def pump(self, timeout=30.0) -> None:
        function, args, kwargs = self.calls.get(timeout=timeout)
        function(*args, **kwargs)

    def stop(self):
        self.pool.stop()


class Gate:
    """Replaces the engine's fsync_path: records each fsync once it has
    returned (with whether it ran on the main thread, where the pumped tests
    run their reactor), and waits for ``opened`` before doing it."""

    def __init__(self, monkeypatch, events):
        self.events = events
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.threads = set()
        real = engine_module.fsync_path

        def gated(path):
            self.entered.set()
            self.opened.wait(30)
            real(path)
            events.append(("fsync", threading.current_thread() is threading.main_thread()))
            self.threads.add(threading.current_thread())

        monkeypatch.setattr(engine_module, "fsync_path", gated)


@pytest.fixture
def pumped():
    reactor = PumpedReactor()
    yield reactor
    reactor.stop()


def _broker(tmp_path, reactor, fsync="always"):
    settings = config.load(None, {"broker.data_dir": str(tmp_path), "storage.fsync": fsync})
    broker = Broker(settings, reactor)
    broker.startService()
    return broker


def test_acks_are_released_after_the_fsync_returned_on_the_reactor_thread(tmp_path, pumped, monkeypatch):
    events = []
    broker = _broker(tmp_path, pumped)
    gate = Gate(monkeypatch, events)
    broker.before_sync.append(lambda: events.append("cut"))
    broker.after_sync.append(
        lambda failed: events.append(("acked", threading.current_thread() is threading.main_thread(), set(failed))))
    store = broker.storage.open_stream("jetstream", "s", Limits())
    store.append("t", None, b"first")  # the store tells the batcher (need_sync)
    broker.batcher.flush()
    assert gate.entered.wait(30)  # the fsync runs (and waits) on a pool thread ...
    assert events == ["cut"]  # ... and nothing is acknowledged meanwhile
    store.append("t", None, b"second")  # appended during the fsync: the next flush's
    broker.batcher.flush()
    assert events == ["cut"]  # one flush at a time
    gate.opened.set()
    while not any(e[0] == "acked" for e in events if isinstance(e, tuple)):
        pumped.pump()
    first_ack = events.index(next(e for e in events if isinstance(e, tuple) and e[0] == "acked"))
    before = events[:first_ack]
    assert before[0] == "cut" and ("fsync", False) in before and "cut" not in before[1:]
    assert events[first_ack] == ("acked", True, set())
    # The second append's flush started when the first was done, and is acknowledged after its own fsync.
    while sum(1 for e in events if isinstance(e, tuple) and e[0] == "acked") < 2:
        pumped.pump()
    after = events[first_ack + 1:]
    assert after[0] == "cut" and ("fsync", False) in after and after[-1] == ("acked", True, set())
    closed = broker.stopService()
    while not closed.called:
        pumped.pump()
    assert store._closed


def test_close_waits_for_the_pending_work(tmp_path, pumped, monkeypatch):
    events = []
    engine = StorageEngine(str(tmp_path), fsync="always", clock=pumped.clock, reactor=pumped,
                           threadpool=pumped.pool)
    gate = Gate(monkeypatch, events)
    store = engine.open_stream("jetstream", "s", Limits())
    store.append("t", None, b"x")
    synced = engine.flush_all()
    assert gate.entered.wait(30)
    closed = engine.close()
    assert not synced.called and not closed.called and not store._closed
    gate.opened.set()
    while not closed.called:
        pumped.pump()
    assert synced.called and store._closed and ("fsync", False) in events


def test_a_consumer_state_save_under_always_fsyncs_on_the_worker(tmp_path, pumped, monkeypatch):
    """A durable consumer's journal append returns before its fsync, which
    runs on a pool thread (before: os.fsync on the reactor thread per save)."""
    events = []
    engine = StorageEngine(str(tmp_path), fsync="always", clock=pumped.clock, reactor=pumped,
                           threadpool=pumped.pool)
    engine.open_stream("jetstream", "s", Limits())
    files = ConsumerFiles(str(tmp_path / "consumer"), engine)
    files.create({"config": {}}, {"next_seq": 1})
    # The creation's own fsync job first: the worker runs one job at a time
    # and starts the next when the reactor hears the last one finished, so
    # the save's job must not queue behind it (it would wait for a pump).
    idle = engine.worker.idle()
    while not idle.called:
        pumped.pump()
    inline = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (inline.append(threading.current_thread()), real_fsync(fd)))
    gate = Gate(monkeypatch, events)
    files.save({"acked": [1]}, lambda: {"next_seq": 2})
    assert gate.entered.wait(30)  # the journal's fsync waits on a pool thread ...
    assert threading.main_thread() not in inline and not events  # ... after the save returned
    gate.opened.set()
    while ("fsync", False) not in events:
        pumped.pump()
    closed = engine.close()
    while not closed.called:
        pumped.pump()


def test_the_reactor_serves_others_while_an_fsync_waits(start_broker, monkeypatch):
    """Through the wire: while the disk holds a stream's fsync, a PubAck
    does not leave but another client's PING is answered at once (before:
    the fsync ran on the reactor thread and held everyone)."""
    events = []
    gate = Gate(monkeypatch, events)
    gate.opened.set()
    broker = start_broker(**{"storage.fsync": "always"})
    publisher = RawClient(broker.port, timeout=30)
    publisher.handshake()
    publisher.send(b'SUB _INBOX.1 1\r\nPUB $JS.API.STREAM.CREATE.S _INBOX.1 '
                   b'%d\r\n{"name":"S","subjects":["s"],"storage":"file"}\r\n'
                   % len(b'{"name":"S","subjects":["s"],"storage":"file"}'))
    assert publisher.read_line().startswith(b"MSG _INBOX.1 1 ")
    publisher.read_line()
    gate.opened.clear()
    gate.entered.clear()
    publisher.send(b"PUB s _INBOX.1 5\r\nhello\r\n")
    assert gate.entered.wait(30)  # the fsync of that message has begun, and waits
    other = RawClient(broker.port, timeout=10)
    other.handshake()  # INFO, CONNECT, PING ... PONG: served while the fsync waits
    other.send(b"PING\r\n")
    assert other.read_line() == b"PONG"
    publisher.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        publisher.read_line()  # no PubAck before the fsync returned
    fsyncs_before_ack = len(events)
    gate.opened.set()
    publisher.sock.settimeout(30)
    assert publisher.read_line().startswith(b"MSG _INBOX.1 1 ")
    assert json.loads(publisher.read_line()) == {"stream": "S", "seq": 1}
    assert len(events) > fsyncs_before_ack  # the PubAck came after the message's fsync returned
    assert conftest._reactor_thread not in gate.threads
    other.sock.close()
    publisher.sock.close()


def test_a_message_logged_during_an_fsync_is_answered_after_the_next_one(tmp_path, pumped, monkeypatch):
    """Log level: the registry cuts each flush, so a message appended while
    an (off-thread) fsync is under way waits for the next fsync."""
    events = []
    broker = _broker(tmp_path, pumped)
    gate = Gate(monkeypatch, events)

    class Answers:
        def accepted(self, message, seq, duplicate):
            return lambda error: events.append(("answered", seq, error))

        def refused(self, message, error):
            raise AssertionError(error)

    log = Log("kafka", "l", broker.storage.open_stream("kafka", "l", Limits()), broker, answers=Answers())
    log.configure(("t",), Limits(), "limits")
    log.attach()
    broker.publish(Message("t", b"first"))
    broker.batcher.flush()
    assert gate.entered.wait(30)
    broker.publish(Message("t", b"second"))  # during the first fsync
    broker.batcher.flush()
    gate.opened.set()
    while ("answered", 2, None) not in events:
        pumped.pump()
    fsyncs = [index for index, event in enumerate(events) if event[0] == "fsync"]
    first, second = events.index(("answered", 1, None)), events.index(("answered", 2, None))
    assert fsyncs[0] < first < second and any(first < index < second for index in fsyncs)
    closed = broker.stopService()
    while not closed.called:
        pumped.pump()


def _drain(pumped, engine) -> None:
    idle = engine.worker.idle()
    while not idle.called:
        pumped.pump()


def test_meta_consumer_files_compaction_and_removals_fsync_on_the_worker(tmp_path, pumped, monkeypatch):
    """Under "always": a meta document written and deleted, a consumer's
    files created, compacted and removed, a stream removed: no fsync on the
    reactor thread (before: replace_file, the directory fsyncs and rmtree
    ran there), and the files end as they should."""
    events = []
    engine = StorageEngine(str(tmp_path), fsync="always", clock=pumped.clock, reactor=pumped,
                           threadpool=pumped.pool)
    inline = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (inline.append(threading.current_thread()), real_fsync(fd)))
    gate = Gate(monkeypatch, events)
    gate.opened.set()
    engine.open_stream("jetstream", "s", Limits())
    engine.write_meta("jetstream", "s", "config", {"a": 1})
    engine.write_meta("jetstream", "s", "gone", {"b": 2})
    engine.delete_meta("jetstream", "s", "gone")
    directory = os.path.join(engine.consumers_directory("jetstream", "s"), "c")
    files = ConsumerFiles(directory, engine)
    files.create({"config": {}}, {"next_seq": 1})
    monkeypatch.setattr(state_module, "COMPACT_MIN", 0)
    files.save({"big": "x" * 1000}, lambda: {"next_seq": 2})  # larger than the snapshot: a compaction
    assert files.generation == 2
    _drain(pumped, engine)
    assert engine.read_meta("jetstream", "s", "config") == {"a": 1}
    assert engine.meta_keys("jetstream", "s") == ["config"]
    with open(os.path.join(directory, "snapshot.json")) as handle:
        assert json.load(handle) == {"generation": 2, "state": {"next_seq": 2}}
    assert sorted(os.listdir(directory)) == ["config.json", "snapshot.json"]
    files.remove()
    assert not os.path.exists(directory)
    engine.remove_stream("jetstream", "s")
    _drain(pumped, engine)
    assert not [entry for entry in os.listdir(str(tmp_path)) if entry.startswith(".removing-")]
    assert threading.main_thread() not in inline
    assert events and all(event == ("fsync", False) for event in events)
    closed = engine.close()
    while not closed.called:
        pumped.pump()


def test_one_save_round_of_many_durables_is_one_worker_job(tmp_path, pumped):
    """Before: each durable consumer's journal append queued its own fsync
    job (100 jobs ahead of the stores' group commit)."""
    from flowmq.nats.jetstream.config import consumer_config, stream_config
    from flowmq.nats.jetstream.service import JetStream

    broker = _broker(tmp_path, pumped)
    jetstream = JetStream(broker, broker.settings)
    jetstream.startService()
    stream = jetstream.create_stream(stream_config({"name": "s", "subjects": ["s"]}, 16))
    consumers = [jetstream.create_consumer(stream, consumer_config(
        {"durable_name": "d%d" % index, "ack_policy": "explicit"}, stream.config,
        {"max_ack_pending": 1000, "max_waiting": 512})) for index in range(100)]
    _drain(pumped, broker.storage)
    jobs = []
    run = broker.storage.worker.run
    broker.storage.worker.run = lambda function, *args: (jobs.append(function), run(function, *args))[1]
    for consumer in consumers:
        jetstream.consumer_changed(consumer)  # a save round of all of them
    jetstream._save()
    assert len(jobs) == 1
    _drain(pumped, broker.storage)
    del broker.storage.worker.run
    jetstream.stopService()
    closed = broker.stopService()
    while not closed.called:
        pumped.pump()
