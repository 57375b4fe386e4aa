"""JetStream durability: what a stream and its consumers keep across a crash
(kill -9 of ``twistd -n flowmq`` in the middle of a publish burst), a
graceful restart, and damaged segment files at start-up.

Every check goes through nats-py, as a user would see it. The crash test
runs the real ``twistd -n flowmq`` as a subprocess (own data directory,
port 0, log file); the others use the in-process broker of conftest.py on
one data directory, stopped and started again.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import struct
import time

import nats
import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from conftest import run

#: A stream's segment file: ``<first seq, 20 digits>.log`` (tombstones.log is not one).
SEGMENT_FILE = re.compile(r"^\d{20}\.log$")
#: A record: u32 CRC, u8 type, u32 length of the whole record, ... (flowmq/core/store/records.py).
RECORD_LENGTH = struct.Struct("<I")
RECORD_LENGTH_OFFSET = 5


# -- helpers: the data directory and the log ---------------------------------------------


def _segments(data_dir, stream):
    """The stream's segment files, oldest first."""
    directory = os.path.join(str(data_dir), "streams", stream)
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory)) if SEGMENT_FILE.match(name)]


def _record_offsets(path):
    """``[(offset, length)]`` of the records of a segment file (read from their headers)."""
    with open(path, "rb") as handle:
        data = handle.read()
    found, offset = [], 0
    while offset < len(data):
        (length,) = RECORD_LENGTH.unpack_from(data, offset + RECORD_LENGTH_OFFSET)
        assert 31 <= length <= len(data) - offset, "unexpected record layout in %s at %d" % (path, offset)
        found.append((offset, length))
        offset += length
    return found


class LogCapture:
    """The broker's log events (formatted, with their level), as an observer of
    twisted.logger's global publisher while the ``with`` block runs."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append((event.get("log_level"), formatEvent(event)))

    def __enter__(self):
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self)

    def lines(self, level=None):
        return [text for event_level, text in list(self.events) if level is None or event_level == level]


# -- helpers: nats-py -----------------------------------------------------------------------


async def _connect(url, **options):
    nc = await nats.connect(url, **options)
    return nc, nc.jetstream()


async def _fetch(psub, count, timeout=10.0):
    """Exactly ``count`` messages from a pull subscription (several fetches if need be)."""
    got = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.extend(await psub.fetch(count - len(got), timeout=timeout))
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            pass
    return got


async def _nothing_more(fetch_or_next, wait=1.0):
    """True if no message comes within ``wait`` seconds."""
    try:
        extra = await fetch_or_next(wait)
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
        return True
    return not extra


async def _stream_contents(js, stream, subjects, expected_count):
    """``{seq: (subject, data)}`` of every message in ``stream``, read with an
    ephemeral pull consumer (ack none, so max_ack_pending does not limit it)."""
    psub = await js.pull_subscribe(subjects, stream=stream,
                                   config=ConsumerConfig(ack_policy=AckPolicy.NONE,
                                                         deliver_policy=DeliverPolicy.ALL))
    contents = {}
    deadline = time.monotonic() + 120
    while len(contents) < expected_count and time.monotonic() < deadline:
        try:
            batch = await psub.fetch(min(500, expected_count - len(contents)), timeout=10)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        for msg in batch:
            seq = msg.metadata.sequence.stream
            assert seq not in contents, "seq %d delivered twice by a fresh consumer" % seq
            contents[seq] = (msg.subject, msg.data)
    await psub.unsubscribe()
    return contents


# -- 1. kill -9 in the middle of a publish burst -----------------------------------------------

CRASH_TOTAL = 6000  # publishes planned (the broker is killed long before the end)
CRASH_WORKERS = 64  # concurrent js.publish calls: so many PubAcks are in flight at the kill
CRASH_KILL_AFTER = 1200  # PubAcks received before the SIGKILL


def _crash_subject(index: int) -> str:
    return "crash.s%d" % (index % 5)


def _crash_payload(index: int) -> bytes:
    """Unique, of varying length, binary; names its index so a stored message can be traced."""
    return b"crash-%06d:" % index + bytes((index * 7 + k) % 256 for k in range(index % 211))


def _crash_index(payload: bytes) -> int:
    return int(payload[6:12])


@pytest.mark.parametrize("fsync, segment_bytes", [
    ("always", None), ("interval", None), ("never", None),
    ("interval", 64 * 1024),  # the burst rolls over several segments (sealed ones get an .idx)
], ids=["always", "interval", "never", "interval-small-segments"])
def test_kill_9_during_publish_burst_keeps_every_acknowledged_message(tmp_path, twistd, fsync, segment_bytes):
    data_dir = tmp_path / "data"
    options = ["--storage-fsync", fsync]
    if segment_bytes:
        options += ["--storage-segment-bytes", str(segment_bytes)]
    broker = twistd(data_dir, "first", *options)

    async def burst():
        nc, js = await _connect(broker.url, allow_reconnect=False, max_reconnect_attempts=0)
        await js.add_stream(name="CRASH", subjects=["crash.>"], storage=StorageType.FILE)
        acked = []  # (index, seq, stream) of every publish that got a PubAck
        indexes = iter(range(CRASH_TOTAL))
        state = {"started": 0, "in_flight_at_kill": None, "errors": []}
        killed = asyncio.Event()

        async def publisher():
            for index in indexes:
                state["started"] += 1
                try:
                    ack = await js.publish(_crash_subject(index), _crash_payload(index), timeout=30)
                except Exception as error:  # after the kill: this publish was not acknowledged
                    if not killed.is_set():
                        state["errors"].append(repr(error))
                    return
                acked.append((index, ack.seq, ack.stream))
                if len(acked) >= CRASH_KILL_AFTER and not killed.is_set():
                    state["in_flight_at_kill"] = state["started"] - len(acked)
                    broker.kill()
                    killed.set()

        tasks = [asyncio.ensure_future(publisher()) for _ in range(CRASH_WORKERS)]
        try:
            await asyncio.wait_for(killed.wait(), 120)
            # PubAcks the broker sent before it died are still read, up to the
            # end of the connection (then nats-py closes it: no reconnect).
            deadline = time.monotonic() + 30
            while not nc.is_closed and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert nc.is_closed
            settled = (-1, 0)
            while settled[1] < 6 and time.monotonic() < deadline:  # until nothing changes for 0.3 s
                settled = (len(acked), settled[1] + 1) if len(acked) == settled[0] else (len(acked), 0)
                await asyncio.sleep(0.05)
        finally:
            # The other publishes are left unanswered: give up on them.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(nc.close(), 10)
            except Exception:
                pass
        return acked, state

    acked, state = run(burst(), timeout=180)
    assert broker.process.returncode == -signal.SIGKILL
    assert not state["errors"], state["errors"]  # no publish failed before the kill
    assert len(acked) >= CRASH_KILL_AFTER
    assert state["in_flight_at_kill"] and state["in_flight_at_kill"] > 0, state  # the kill hit a busy broker
    assert {stream for _index, _seq, stream in acked} == {"CRASH"}
    seqs = [seq for _index, seq, _stream in acked]
    assert len(set(seqs)) == len(seqs), "two PubAcks with the same seq"
    highest = max(seqs)

    if segment_bytes:
        assert len(_segments(data_dir, "CRASH")) >= 3
    broker = twistd(data_dir, "second", *options)

    async def check():
        nc, js = await _connect(broker.url)
        info = await js.stream_info("CRASH")
        assert info.config.subjects == ["crash.>"]
        assert info.config.storage == StorageType.FILE
        assert info.state.last_seq >= highest
        assert info.state.messages >= len(acked)
        contents = await _stream_contents(js, "CRASH", "crash.>", info.state.messages)
        assert len(contents) == info.state.messages
        missing = [(index, seq) for index, seq, _stream in acked if seq not in contents]
        assert not missing, "%d acknowledged messages lost, e.g. (index, seq) %s" % (len(missing), missing[:10])
        wrong = [(seq, index, _crash_index(contents[seq][1])) for index, seq, _stream in acked
                 if contents[seq] != (_crash_subject(index), _crash_payload(index))]
        assert not wrong, "%d acknowledged seqs hold another message, e.g. (seq, acked index, stored) %s" % (
            len(wrong), wrong[:10])
        # Whatever else is stored (written but not yet acknowledged at the kill)
        # is an intact publish of the burst, each at most once.
        stored_indexes = []
        for seq, (subject, data) in contents.items():
            index = _crash_index(data)
            assert (subject, data) == (_crash_subject(index), _crash_payload(index)), seq
            stored_indexes.append(index)
        assert len(set(stored_indexes)) == len(stored_indexes), "a publish stored twice"
        # Spot checks with the direct get, then new publishes go on after the old ones.
        for index, seq, _stream in (acked[0], acked[-1], max(acked, key=lambda entry: entry[1])):
            msg = await js.get_msg("CRASH", seq)
            assert (msg.seq, msg.subject, msg.data) == (seq, _crash_subject(index), _crash_payload(index))
        after = [await js.publish("crash.after", b"after-%d" % n) for n in range(3)]
        assert [ack.seq for ack in after] == [info.state.last_seq + n for n in (1, 2, 3)]
        assert after[0].seq > highest
        msg = await js.get_msg("CRASH", after[-1].seq)
        assert msg.data == b"after-2"
        info = await js.stream_info("CRASH")
        assert info.state.last_seq == after[-1].seq
        await nc.close()

    run(check(), timeout=180)
    log = broker.log()
    assert "stream CRASH:" in log
    broker.stop()


def test_kill_9_keeps_deletes_purges_and_consumer_acks(tmp_path, twistd):
    """What was acknowledged before kill -9 besides publishes: a delete, a purge
    (their API replies), consumer acks (saved within 50 ms; we wait 1 s) and
    the message ids of the duplicate window."""
    data_dir = tmp_path / "data"
    broker = twistd(data_dir, "first")

    async def before():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="KILLED", subjects=["killed.>"], storage=StorageType.FILE)
        for n in range(1, 11):
            await js.publish("killed.%d" % n, b"k%d" % n, headers={"Nats-Msg-Id": "id-%d" % n})
        assert await js.purge_stream("KILLED", seq=3)
        assert await js.delete_msg("KILLED", 5)
        psub = await js.pull_subscribe("killed.>", durable="survivor", stream="KILLED",
                                       config=ConsumerConfig(ack_wait=120.0))
        msgs = await _fetch(psub, 4)
        assert [m.metadata.sequence.stream for m in msgs] == [3, 4, 6, 7]
        await msgs[0].ack_sync()
        await msgs[1].ack_sync()
        await asyncio.sleep(1.0)  # the consumer state is saved at most 50 ms after a change
        await nc.close()

    run(before(), timeout=60)
    broker.kill()
    broker = twistd(data_dir, "second")

    async def after():
        nc, js = await _connect(broker.url)
        info = await js.stream_info("KILLED")
        assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (7, 3, 10)
        for n in (1, 2, 5):
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.get_msg("KILLED", n)
        consumer = await js.consumer_info("KILLED", "survivor")
        assert (consumer.num_ack_pending, consumer.num_pending) == (2, 3)
        assert (consumer.delivered.stream_seq, consumer.ack_floor.stream_seq) == (7, 5)  # 5 is deleted
        psub = await js.pull_subscribe("killed.>", durable="survivor", stream="KILLED")
        msgs = await _fetch(psub, 5)
        got = sorted((m.metadata.sequence.stream, m.metadata.num_delivered, m.data) for m in msgs)
        assert got == [(6, 2, b"k6"), (7, 2, b"k7"), (8, 1, b"k8"), (9, 1, b"k9"), (10, 1, b"k10")]
        for msg in msgs:
            await msg.ack_sync()
        assert await _nothing_more(lambda wait: psub.fetch(1, timeout=wait))
        # The duplicate window (2 minutes) outlives the crash: a re-sent id is a duplicate.
        again = await js.publish("killed.10", b"k10", headers={"Nats-Msg-Id": "id-10"})
        assert (again.seq, again.duplicate) == (10, True)
        assert (await js.publish("killed.new", b"new")).seq == 11
        await nc.close()

    run(after(), timeout=60)
    broker.stop()


# -- 2. a graceful restart keeps streams, deletions, purges and durable pull consumers ------------


def _order(n: int) -> tuple:
    return ("orders.%s" % ("a" if n % 3 else "b"), b"order-%02d" % n)


def test_restart_keeps_stream_config_messages_deletions_purges_and_pull_consumer_state(start_broker):
    broker = start_broker()
    seen = {}

    async def before():
        nc, js = await _connect(broker.url)
        await js.add_stream(StreamConfig(
            name="ORDERS", subjects=["orders.>"], storage=StorageType.FILE, description="kept across restarts",
            max_msgs=1000, max_msgs_per_subject=500, max_bytes=1 << 20, max_msg_size=4096,
            duplicate_window=300.0))
        for n in range(1, 21):
            subject, data = _order(n)
            headers = {"Order": str(n)} if n % 4 == 0 else None
            ack = await js.publish(subject, data, headers=headers)
            assert ack.seq == n
        assert await js.purge_stream("ORDERS", seq=4)  # 1..3 gone: first_seq 4
        assert await js.delete_msg("ORDERS", 6)
        assert await js.delete_msg("ORDERS", 9)

        await js.add_stream(name="GONE", subjects=["gone.>"], storage=StorageType.FILE)
        for n in range(5):
            await js.publish("gone.x", b"%d" % n)
        assert await js.purge_stream("GONE")  # everything: first_seq 6, last_seq 5

        await js.add_stream(name="SCRATCH", subjects=["scratch.>"], storage=StorageType.MEMORY)
        for n in range(3):
            await js.publish("scratch.x", b"%d" % n)

        # A durable pull consumer: 6 delivered, the first 3 acked, 3 left unacked.
        psub = await js.pull_subscribe("orders.>", durable="worker", stream="ORDERS",
                                       config=ConsumerConfig(ack_wait=120.0))
        msgs = await _fetch(psub, 6)
        assert [m.metadata.sequence.stream for m in msgs] == [4, 5, 7, 8, 10, 11]
        for msg in msgs[:3]:
            await msg.ack_sync()
        # A durable consumer that never fetched, filtered on orders.b.
        await js.add_consumer("ORDERS", ConsumerConfig(durable_name="idle", filter_subject="orders.b",
                                                       ack_policy=AckPolicy.EXPLICIT))
        seen["orders"] = await js.stream_info("ORDERS")
        seen["worker"] = await js.consumer_info("ORDERS", "worker")
        seen["idle"] = await js.consumer_info("ORDERS", "idle")
        seen["gone"] = await js.stream_info("GONE")
        await nc.close()

    run(before(), timeout=60)
    worker = seen["worker"]
    assert (worker.num_ack_pending, worker.num_pending) == (3, 9)
    assert (worker.delivered.stream_seq, worker.ack_floor.stream_seq) == (11, 7)
    live = [n for n in range(4, 21) if n not in (6, 9)]
    assert seen["orders"].state.messages == len(live)
    broker.stop()

    broker = start_broker()  # same data directory

    async def after():
        nc, js = await _connect(broker.url)
        names = sorted(info.config.name for info in await js.streams_info())
        assert names == ["GONE", "ORDERS"]  # the memory stream is gone
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.stream_info("SCRATCH")

        info = await js.stream_info("ORDERS")
        assert info.config == seen["orders"].config
        assert info.created == seen["orders"].created
        state, old = info.state, seen["orders"].state
        assert (state.messages, state.bytes, state.first_seq, state.last_seq, state.num_deleted) == (
            old.messages, old.bytes, 4, 20, 2)
        assert state.messages == len(live)
        for n in range(1, 21):
            if n in live:
                msg = await js.get_msg("ORDERS", n)
                assert (msg.seq, msg.subject, msg.data) == (n,) + _order(n)
                assert (msg.headers or {}).get("Order") == (str(n) if n % 4 == 0 else None)
            else:
                with pytest.raises(nats.js.errors.NotFoundError):
                    await js.get_msg("ORDERS", n)

        gone = await js.stream_info("GONE")
        assert (gone.state.messages, gone.state.first_seq, gone.state.last_seq) == (0, 6, 5)
        assert (await js.publish("gone.x", b"new")).seq == 6

        # The pull consumer: same state; the 3 unacked come again (second delivery),
        # then the 9 never delivered; the 3 acked never come back.
        worker = await js.consumer_info("ORDERS", "worker")
        old = seen["worker"]
        assert worker.config.ack_wait == old.config.ack_wait
        assert (worker.delivered.stream_seq, worker.delivered.consumer_seq) == (
            old.delivered.stream_seq, old.delivered.consumer_seq)
        assert (worker.ack_floor.stream_seq, worker.ack_floor.consumer_seq) == (
            old.ack_floor.stream_seq, old.ack_floor.consumer_seq)
        assert (worker.num_ack_pending, worker.num_pending) == (3, 9)
        idle = await js.consumer_info("ORDERS", "idle")
        assert idle.num_pending == seen["idle"].num_pending == sum(1 for n in live if n % 3 == 0)
        assert idle.config.filter_subject == "orders.b"

        psub = await js.pull_subscribe("orders.>", durable="worker", stream="ORDERS")
        msgs = await _fetch(psub, 12)
        got = [(m.metadata.sequence.stream, m.metadata.num_delivered) for m in msgs]
        assert sorted(got) == [(8, 2), (10, 2), (11, 2)] + [(n, 1) for n in live if n > 11]
        assert [seq for seq, _count in got[:3]] == [8, 10, 11]  # redeliveries first
        for msg in msgs:
            assert (msg.subject, msg.data) == _order(msg.metadata.sequence.stream)
            await msg.ack_sync()
        assert await _nothing_more(lambda wait: psub.fetch(1, timeout=wait))
        await nc.close()

    run(after(), timeout=90)
    broker.stop()

    broker = start_broker()  # once more: everything acked stays acked

    async def again():
        nc, js = await _connect(broker.url)
        worker = await js.consumer_info("ORDERS", "worker")
        assert (worker.num_ack_pending, worker.num_pending) == (0, 0)
        assert (worker.delivered.stream_seq, worker.ack_floor.stream_seq) == (20, 20)
        assert (await js.publish("orders.a", b"order-21")).seq == 21
        psub = await js.pull_subscribe("orders.>", durable="worker", stream="ORDERS")
        msgs = await _fetch(psub, 1)
        assert [(m.metadata.sequence.stream, m.data) for m in msgs] == [(21, b"order-21")]
        await msgs[0].ack_sync()
        assert await _nothing_more(lambda wait: psub.fetch(1, timeout=wait))
        info = await js.stream_info("ORDERS")
        assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (len(live) + 1, 4, 21)
        # The memory stream's name is free again, and it starts from nothing.
        await js.add_stream(name="SCRATCH", subjects=["scratch.>"], storage=StorageType.MEMORY)
        assert (await js.publish("scratch.x", b"again")).seq == 1
        await nc.close()

    run(again(), timeout=60)


# -- 3. a durable push consumer across a restart ----------------------------------------------------


def test_durable_push_consumer_resumes_after_restart(start_broker):
    broker = start_broker()

    async def before():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="PUSH", subjects=["push.>"], storage=StorageType.FILE)
        for n in range(1, 5):
            await js.publish("push.%d" % n, b"p%d" % n)
        sub = await js.subscribe("push.>", durable="pusher", manual_ack=True,
                                 config=ConsumerConfig(ack_wait=120.0))
        for n in range(1, 5):
            msg = await sub.next_msg(timeout=10)
            assert (msg.metadata.sequence.stream, msg.data) == (n, b"p%d" % n)
            await msg.ack_sync()
        await js.publish("push.5", b"p5")
        msg = await sub.next_msg(timeout=10)  # delivered, never acked
        assert (msg.metadata.sequence.stream, msg.data) == (5, b"p5")
        info = await js.consumer_info("PUSH", "pusher")
        assert (info.num_ack_pending, info.delivered.stream_seq, info.ack_floor.stream_seq) == (1, 5, 4)
        await nc.close()  # the subscriber goes away; the durable consumer stays

        nc, js = await _connect(broker.url)
        for n in range(6, 11):
            await js.publish("push.%d" % n, b"p%d" % n)
        await nc.close()

    run(before(), timeout=60)
    broker.stop()

    broker = start_broker()

    async def after():
        nc, js = await _connect(broker.url)
        info = await js.consumer_info("PUSH", "pusher")
        assert (info.num_ack_pending, info.num_pending) == (1, 5)
        sub = await js.subscribe("push.>", durable="pusher", manual_ack=True)
        got = []
        for _ in range(6):
            msg = await sub.next_msg(timeout=30)
            got.append((msg.metadata.sequence.stream, msg.metadata.num_delivered, msg.data))
            await msg.ack_sync()
        assert sorted(got) == [(5, 2, b"p5")] + [(n, 1, b"p%d" % n) for n in range(6, 11)]
        assert await _nothing_more(lambda wait: sub.next_msg(timeout=wait))
        info = await js.consumer_info("PUSH", "pusher")
        assert (info.num_ack_pending, info.num_pending, info.ack_floor.stream_seq) == (0, 0, 10)
        await nc.close()

    run(after(), timeout=90)


# -- 4. damaged segment files at start-up -------------------------------------------------------------


def _log_message(n: int) -> tuple:
    """(subject, payload, headers) of message n of the LOG stream: sizes vary, some have headers."""
    headers = {"N": str(n), "Kind": "odd"} if n % 2 else None
    return "log.%d" % (n % 3), b"log-%03d:" % n + b"x" * (n * 37 % 300), headers


def _fill_log_stream(broker, total: int) -> None:
    """Stream LOG with messages 1..total (``_log_message``), then the broker stopped."""
    async def fill():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="LOG", subjects=["log.>"], storage=StorageType.FILE)
        for n in range(1, total + 1):
            subject, data, headers = _log_message(n)
            assert (await js.publish(subject, data, headers=headers)).seq == n
        await nc.close()

    run(fill())
    broker.stop()


def _damage(kind, path):
    """Damage a segment file; returns (records kept, bytes the broker should drop)."""
    records = _record_offsets(path)
    size = os.path.getsize(path)
    if kind == "torn-record":  # a write cut short in the middle of record 8
        offset, length = records[7]
        os.truncate(path, offset + length // 2)
        return 7, length // 2
    if kind == "bad-crc":  # bytes overwritten in the middle of record 5
        offset, length = records[4]
        with open(path, "r+b") as handle:
            handle.seek(offset + length - 5)
            data = handle.read(3)
            handle.seek(offset + length - 5)
            handle.write(bytes(b ^ 0x5A for b in data))
        return 4, size - offset
    if kind == "garbage-tail":
        with open(path, "ab") as handle:
            handle.write(b"\xde\xad\xbe\xef not a record \x00\x01" * 8)
        return len(records), os.path.getsize(path) - size
    if kind == "zero-tail":  # a file extended with zeros (what a crash can leave)
        with open(path, "ab") as handle:
            handle.write(bytes(4096))
        return len(records), 4096
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["torn-record", "bad-crc", "garbage-tail", "zero-tail"])
def test_damaged_segment_keeps_valid_prefix(start_broker, tmp_path, kind):
    total = 10
    _fill_log_stream(start_broker(), total)
    data_dir = tmp_path / "data"
    segments = _segments(data_dir, "LOG")
    assert len(segments) == 1 and len(_record_offsets(segments[0])) == total
    kept, dropped = _damage(kind, segments[0])
    segment_name = os.path.basename(segments[0])

    with LogCapture() as captured:
        broker = start_broker()
        started = captured.lines()
    warnings = [line for line in captured.lines(LogLevel.warn) if segment_name in line]
    assert len(warnings) == 1, "expected one warning naming %s, got: %s" % (segment_name, started)
    assert "dropped %d bytes" % dropped in warnings[0], warnings[0]

    async def check():
        nc, js = await _connect(broker.url)
        info = await js.stream_info("LOG")
        assert info.state.messages == kept
        assert info.state.first_seq == 1
        assert info.state.last_seq >= kept
        for n in range(1, total + 1):
            if n <= kept:
                msg = await js.get_msg("LOG", n)
                subject, data, headers = _log_message(n)
                assert (msg.seq, msg.subject, msg.data) == (n, subject, data)
                assert {k: v for k, v in (msg.headers or {}).items()} == (headers or {})
            else:
                with pytest.raises(nats.js.errors.NotFoundError):
                    await js.get_msg("LOG", n)
        ack = await js.publish("log.new", b"after the damage")
        assert ack.seq == info.state.last_seq + 1
        assert (await js.get_msg("LOG", ack.seq)).data == b"after the damage"
        info = await js.stream_info("LOG")
        assert info.state.messages == kept + 1
        await nc.close()
        return ack.seq

    new_seq = run(check())
    broker.stop()

    # The cut file takes new records cleanly: a second start finds nothing to drop.
    with LogCapture() as captured:
        broker = start_broker()
    assert not [line for line in captured.lines(LogLevel.warn) if "dropped" in line]

    async def check_again():
        nc, js = await _connect(broker.url)
        info = await js.stream_info("LOG")
        assert (info.state.messages, info.state.last_seq) == (kept + 1, new_seq)
        assert (await js.get_msg("LOG", new_seq)).data == b"after the damage"
        assert (await js.get_msg("LOG", kept)).data == _log_message(kept)[1]
        await nc.close()

    run(check_again())


def test_torn_sealed_segment_keeps_later_segments(start_broker, tmp_path):
    """With several segments, a sealed one cut short loses only its own tail."""
    total = 40
    _fill_log_stream(start_broker(**{"storage.segment_bytes": 1024}), total)
    segments = _segments(tmp_path / "data", "LOG")
    assert len(segments) >= 3
    victim = segments[1]
    base = int(os.path.basename(victim)[:20])
    records = _record_offsets(victim)
    assert len(records) >= 2
    offset, length = records[-1]
    os.truncate(victim, offset + length - 1)  # its last record loses one byte
    lost = base + len(records) - 1

    with LogCapture() as captured:
        broker = start_broker(**{"storage.segment_bytes": 1024})
    warnings = [line for line in captured.lines(LogLevel.warn) if os.path.basename(victim) in line]
    assert len(warnings) == 1, captured.lines()
    assert "dropped %d bytes" % (length - 1) in warnings[0], warnings[0]

    async def check():
        nc, js = await _connect(broker.url)
        info = await js.stream_info("LOG")
        assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (total - 1, 1, total)
        for n in range(1, total + 1):
            if n == lost:
                with pytest.raises(nats.js.errors.NotFoundError):
                    await js.get_msg("LOG", n)
            else:
                msg = await js.get_msg("LOG", n)
                assert (msg.seq, msg.data) == (n, _log_message(n)[1])
        assert (await js.publish("log.new", b"new")).seq == total + 1
        await nc.close()

    run(check())


def test_corrupt_record_in_sealed_segment_is_never_served(start_broker, tmp_path):
    """Bytes overwritten inside a sealed segment (whose .idx still matches its
    size): the broker starts, serves every other message as it was, never the
    damaged one, names the file in its log, and takes new publishes."""
    total = 40
    settings = {"storage.segment_bytes": 1024}
    _fill_log_stream(start_broker(**settings), total)
    segments = _segments(tmp_path / "data", "LOG")
    assert len(segments) >= 3
    victim = segments[1]
    damaged = int(os.path.basename(victim)[:20]) + 1  # its second record
    offset, length = _record_offsets(victim)[1]
    with open(victim, "r+b") as handle:
        handle.seek(offset + length - 3)
        handle.write(b"ZZZ")

    with LogCapture() as captured:
        broker = start_broker(**settings)

        async def check():
            nc, js = await _connect(broker.url)
            for n in range(1, total + 1):
                if n == damaged:
                    with pytest.raises(nats.js.errors.NotFoundError):
                        await js.get_msg("LOG", n)
                else:
                    msg = await js.get_msg("LOG", n)
                    assert (msg.seq, msg.subject, msg.data) == (n,) + _log_message(n)[:2]
            contents = await _stream_contents(js, "LOG", "log.>", total - 1)
            assert sorted(contents) == [n for n in range(1, total + 1) if n != damaged]
            assert all(contents[n] == _log_message(n)[:2] for n in contents)
            assert (await js.publish("log.new", b"new")).seq == total + 1
            await nc.close()

        run(check())
    named = [line for line in captured.lines() if os.path.basename(victim) in line]
    assert named, captured.lines()


def _limit_file_size():
    """In the broker's process: files may not grow past 1 MiB, and a write
    beyond that fails with EFBIG (as on a full disk) instead of a signal."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_failed_disk_write_is_not_acknowledged(tmp_path, twistd):
    """When the store cannot write (here: the process may not grow a file
    past 1 MiB), the publishes of that batch get an error instead of a
    PubAck; everything acknowledged before is there after a crash."""
    data_dir = tmp_path / "data"
    broker = twistd(data_dir, "limited", "--storage-segment-bytes", str(64 << 20), preexec_fn=_limit_file_size)
    payload = b"p" * 1000

    async def publish_until_refused():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="DISK", subjects=["disk"])
        acked = []
        refused = None
        for _ in range(3000):
            try:
                ack = await js.publish("disk", payload, timeout=10)
            except nats.js.errors.APIError as e:
                refused = e
                break
            acked.append(ack.seq)
        # The broker still serves: core NATS and the JetStream API.
        info = await js.stream_info("DISK")
        await nc.close()
        return acked, refused, info

    acked, refused, info = run(publish_until_refused(), timeout=120)
    assert refused is not None, "1 MiB of segment file was written without an error"
    assert (refused.code, refused.err_code) == (503, 10077)
    assert "writing to disk failed" in refused.description
    assert acked == list(range(1, len(acked) + 1)) and len(acked) > 100
    assert info.state.last_seq >= len(acked)
    assert "writing to disk failed" in broker.log()
    broker.kill()

    again = twistd(data_dir, "unlimited")

    async def read_back():
        nc, js = await _connect(again.url)
        present = []
        for seq in acked:
            message = await js.get_msg("DISK", seq)
            present.append(message.data == payload)
        await nc.close()
        return present

    assert all(run(read_back(), timeout=120))
