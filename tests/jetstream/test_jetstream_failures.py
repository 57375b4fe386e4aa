"""JetStream when the disk or a saved document fails: a full disk (the file
store's write raising ENOSPC), a torn consumer document at start-up.

The broker is real and driven over the wire with nats-py; only the disk
write is made to fail, as a full disk would.
"""

from __future__ import annotations

import errno
import glob
import os
import time

import nats
import nats.js.errors
from nats.js.api import ConsumerConfig, StorageType

from flowmq.core.store.filestore import FileStore
from tests.conftest import run


async def _connect(url):
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
    return nc, nc.jetstream(timeout=10)


def _add_file_stream(broker, name: str, subject: str) -> None:
    async def add():
        nc, js = await _connect(broker.url)
        await js.add_stream(name=name, subjects=[subject], storage=StorageType.FILE)
        await nc.close()

    run(add())


class _FailingFlush:
    """FileStore.flush that fails like a full disk while ``failing`` and counts its calls."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self.failing = True
        real = FileStore.flush

        def flush(store):
            self.calls += 1
            if self.failing:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(store)

        monkeypatch.setattr(FileStore, "flush", flush)


def test_a_failing_disk_is_not_retried_on_every_reactor_turn(start_broker, monkeypatch):
    """While the disk stays full, the failed store is tried again about once a
    second, not on every reactor turn (which would be a busy loop of errors)."""
    broker = start_broker()
    _add_file_stream(broker, "FULL", "full")
    failing = _FailingFlush(monkeypatch)

    async def publish_once():
        nc, js = await _connect(broker.url)
        try:
            await js.publish("full", b"x", timeout=5)
        except nats.js.errors.APIError as e:
            assert e.code == 503
        await nc.close()

    run(publish_once())
    before = failing.calls
    time.sleep(0.5)
    retried = failing.calls - before
    failing.failing = False
    # A retry or two per second (or one per fsync interval) is plenty; the
    # reactor-turn loop makes thousands.
    assert retried <= 10, "flush retried %d times in 0.5 s with nothing new to write" % retried


def test_a_refused_publish_is_not_stored_and_delivered_anyway(start_broker, monkeypatch):
    """A publish refused with 503 "writing to disk failed" is not stored: the
    retry that the error invites makes the only copy."""
    broker = start_broker()
    _add_file_stream(broker, "RETRY", "retry")
    failing = _FailingFlush(monkeypatch)

    async def publish_retrying():
        nc, js = await _connect(broker.url)
        refused = False
        try:
            await js.publish("retry", b"once", timeout=5)
        except nats.js.errors.APIError:
            refused = True
        failing.failing = False
        await js.publish("retry", b"once", timeout=5)  # the retry the 503 asks for
        info = await js.stream_info("RETRY")
        await nc.close()
        return refused, info.state.messages

    refused, messages = run(publish_retrying())
    assert refused
    assert messages == 1, "the refused message was stored as well: %d copies" % messages


def test_an_unreadable_consumer_document_does_not_stop_the_broker(start_broker, tmp_path):
    """A consumer document that cannot be read (torn by a crash with
    storage.fsync=never, or a full disk) leaves that consumer out with a
    warning; the broker starts and the stream is there."""
    broker = start_broker()

    async def setup():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="KEEP", subjects=["keep"], storage=StorageType.FILE)
        await js.publish("keep", b"k")
        await js.add_consumer("KEEP", ConsumerConfig(durable_name="reader"))
        await nc.close()

    run(setup())
    broker.stop()
    documents = glob.glob(os.path.join(str(tmp_path / "data"), "streams", "*", "consumers", "*", "config.json"))
    assert documents, "no consumer document on disk"
    for path in documents:
        with open(path, "wb") as handle:
            handle.write(b'{"config": {"durable_na')  # torn

    again = start_broker()

    async def check():
        nc, js = await _connect(again.url)
        info = await js.stream_info("KEEP")
        await nc.close()
        return info.state.messages

    assert run(check()) == 1
