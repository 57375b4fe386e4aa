"""A durable consumer's state on disk (flowmq/core/streams/state.py as the
JetStream service uses it): it survives kill -9 of ``twistd -n flowmq``,
and consumer documents of earlier versions are read and moved to the new
files at start-up. Checked through nats-py, as a user sees it.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

from conftest import run
from test_jetstream_durability import _connect, _fetch

from flowmq.core.store import StorageEngine


def test_kill_9_keeps_a_durable_consumer_its_acks_and_its_pending(tmp_path, twistd):
    data_dir = tmp_path / "data"
    broker = twistd(data_dir, "first", "--storage-fsync", "interval")

    async def before():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="KEPT", subjects=["kept.>"], storage=StorageType.FILE)
        for i in range(1, 21):
            await js.publish("kept.%d" % (i % 3), b"m%d" % i)
        await js.add_consumer("KEPT", ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT,
                                                     ack_wait=3600))
        psub = await js.pull_subscribe_bind("reader", stream="KEPT")
        for msg in await _fetch(psub, 10):
            await msg.ack_sync()
        unacked = [msg.metadata.sequence.stream for msg in await _fetch(psub, 3)]
        await asyncio.sleep(1.0)  # the state is saved within 50 ms
        await nc.close()
        return unacked

    assert run(before()) == [11, 12, 13]
    broker.kill()
    again = twistd(data_dir, "second")

    async def after():
        nc, js = await _connect(again.url)
        info = await js.consumer_info("KEPT", "reader")
        psub = await js.pull_subscribe_bind("reader", stream="KEPT")
        got = [(msg.metadata.sequence.stream, msg.metadata.num_delivered) for msg in await _fetch(psub, 10)]
        await nc.close()
        return info, got

    info, got = run(after())
    assert info.ack_floor.stream_seq == 10 and info.num_ack_pending == 3 and info.num_pending == 7, info
    assert got == [(11, 2), (12, 2), (13, 2)] + [(seq, 1) for seq in range(14, 21)]
    assert "not restored" not in again.log(), again.log()


def test_a_consumer_document_of_an_earlier_version_is_read_and_moved(start_broker, tmp_path):
    data_dir = tmp_path / "data"
    broker = start_broker()

    async def setup():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="OLD", subjects=["old"], storage=StorageType.FILE)
        for i in range(1, 6):
            await js.publish("old", b"m%d" % i)
        await js.add_consumer("OLD", ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT))
        await nc.close()

    run(setup())
    broker.stop()
    consumers = glob.glob(os.path.join(str(data_dir), "streams", "OLD", "consumers", "*"))
    assert len(consumers) == 1
    with open(os.path.join(consumers[0], "config.json")) as handle:
        document = json.load(handle)
    shutil.rmtree(os.path.dirname(consumers[0]))
    # As FlowMQ wrote it before: config and state in one meta document. The
    # consumer delivered 1..3 (seq 4 is next), 1 and 3 are acked, 2 is pending.
    engine = StorageEngine(str(data_dir))
    engine.write_meta("jetstream", "OLD", "consumer.reader", dict(document, state={
        "next_seq": 4, "delivered": [3, 3], "ack_floor": [1, 1], "pending": [[2, 2, 1]], "last_per_subject": []}))
    engine.close()

    again = start_broker()

    async def check():
        nc, js = await _connect(again.url)
        info = await js.consumer_info("OLD", "reader")
        psub = await js.pull_subscribe_bind("reader", stream="OLD")
        got = [(msg.metadata.sequence.stream, msg.metadata.num_delivered) for msg in await _fetch(psub, 3)]
        await nc.close()
        return info, got

    info, got = run(check())
    assert info.ack_floor.stream_seq == 1 and info.delivered.stream_seq == 3 and info.num_ack_pending == 1, info
    assert got == [(2, 2), (4, 1), (5, 1)]
    assert not glob.glob(os.path.join(str(data_dir), "streams", "OLD", "meta", "consumer*"))
    assert len(glob.glob(os.path.join(str(data_dir), "streams", "OLD", "consumers", "*", "config.json"))) == 1


def test_a_durable_consumer_whose_files_cannot_be_written_is_refused_and_leaves_nothing(start_broker, tmp_path):
    broker = start_broker()
    blocker = os.path.join(str(tmp_path / "data"), "streams", "W", "consumers")

    async def main():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="W", subjects=["w"], storage=StorageType.FILE)
        with open(blocker, "wb"):  # a file where the consumers' directory goes
            pass
        try:
            await js.add_consumer("W", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT))
        except nats.js.errors.APIError as e:
            refused = (e.code, e.err_code)
        else:
            refused = None
        names = await js.consumers_info("W")
        os.unlink(blocker)
        await js.add_consumer("W", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT))
        await js.publish("w", b"x")
        psub = await js.pull_subscribe_bind("d", stream="W")
        got = [msg.data for msg in await _fetch(psub, 1)]
        await nc.close()
        return refused, names, got

    refused, names, got = run(main())
    assert refused == (500, 10012)
    assert names == []
    assert got == [b"x"]


def test_a_torn_journal_tail_keeps_the_consumer_and_its_acks(start_broker, tmp_path):
    broker = start_broker()

    async def setup():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="T", subjects=["t"], storage=StorageType.FILE)
        for i in range(1, 6):
            await js.publish("t", b"m%d" % i)
        await js.add_consumer("T", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT))
        psub = await js.pull_subscribe_bind("d", stream="T")
        for msg in await _fetch(psub, 2):
            await msg.ack_sync()
        await nc.close()

    run(setup())
    broker.stop()
    journals = glob.glob(os.path.join(str(tmp_path / "data"), "streams", "T", "consumers", "*", "journal.*.log"))
    assert len(journals) == 1
    with open(journals[0], "ab") as handle:
        handle.write(b"\x40\x00\x00\x00\x01\x02\x03\x04{\"next_seq\": 9")  # a record cut by a power loss
    again = start_broker()

    async def check():
        nc, js = await _connect(again.url)
        info = await js.consumer_info("T", "d")
        psub = await js.pull_subscribe_bind("d", stream="T")
        got = [msg.metadata.sequence.stream for msg in await _fetch(psub, 3)]
        await nc.close()
        return info, got

    info, got = run(check())
    assert info.ack_floor.stream_seq == 2 and info.num_pending == 3, info
    assert got == [3, 4, 5]
