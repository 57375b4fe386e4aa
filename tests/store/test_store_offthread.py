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
    files = ConsumerFiles(str(tmp_path / "consumer"), engine.fsync, engine.sync_paths)
    files.create({"config": {}}, {"next_seq": 1})
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
