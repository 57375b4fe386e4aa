"""JetStream restart safety: what the API refuses is never stored, what was
stored always starts again, and one failing stream never stops the others.

- a subject deeper than broker.max_topic_levels is refused before anything
  is stored (create and update), and a stream that today's settings cannot
  serve (the limit was lowered since) is left out at start-up with an
  error naming it; the broker serves the rest;
- numbers from the network are range-checked as nats-server does (a number
  that does not fit its Go type is "invalid JSON", 400 10025) and against
  what the store holds (a sequence is an i64 there): a purge to 2**70 is
  refused instead of breaking every later publish and the restart;
- a store whose flush fails (a bug, not just a full disk) costs that store
  only: the others are still written, fsynced and compacted;
- file streams hold one open file each, and are limited to half of the
  process's open-file limit with an API error that names it.

Everything goes over the wire with nats-py; restarts use the in-process
broker twice on one data directory, or ``twistd -n flowmq`` subprocesses
(test_jetstream_durability.py's helpers) where the process's exit matters.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time

import nats
import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

from conftest import run
from flowmq.core.store.filestore import FileStore
from test_jetstream_durability import LogCapture, _segments

#: The last sequence a FlowMQ stream can have (the record codec's i64).
LAST_SEQ = 2 ** 63 - 1
DEEP_LEVELS = 8


def _deep(levels: int, root: str = "deep") -> str:
    """A subject of ``levels`` tokens."""
    return ".".join([root] + ["t%d" % n for n in range(levels - 1)])


async def _connect(url):
    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
    return nc, nc.jetstream(timeout=10)


async def _info_and_fetch(url, stream: str, durable: str, count: int):
    """The stream's info and the next ``count`` messages of its durable pull consumer."""
    nc, js = await _connect(url)
    info = await js.stream_info(stream)
    psub = await js.pull_subscribe_bind(durable, stream=stream)
    msgs = await psub.fetch(count, timeout=10)
    await nc.close()
    return info, msgs


async def _api(nc, subject: str, body=None) -> dict:
    """A $JS.API request with a raw JSON body (nats-py would check or convert it)."""
    payload = b"" if body is None else json.dumps(body).encode()
    answer = await nc.request("$JS.API." + subject, payload, timeout=10)
    return json.loads(answer.data)


def _error(answer: dict) -> tuple:
    """(code, err_code) of an API answer's error, or None if it succeeded."""
    error = answer.get("error")
    return None if error is None else (error["code"], error["err_code"])


def _stream_names(url) -> list:
    async def names():
        nc, _js = await _connect(url)
        answer = await _api(nc, "STREAM.NAMES")
        await nc.close()
        return answer["streams"] or []

    return run(names())


# -- 1. subjects deeper than broker.max_topic_levels ------------------------------------------


def test_a_stream_deeper_than_max_topic_levels_is_refused_and_not_stored(start_broker, tmp_path):
    """nats-server answers an invalid subject with 500 10052; FlowMQ's router
    holds at most broker.max_topic_levels levels, so a deeper subject is
    invalid the same way, and nothing of the stream is kept."""
    broker = start_broker(**{"broker.max_topic_levels": DEEP_LEVELS})

    async def create():
        nc, _js = await _connect(broker.url)
        deep = await _api(nc, "STREAM.CREATE.DEEP", {"name": "DEEP", "subjects": [_deep(DEEP_LEVELS + 1)]})
        fits = await _api(nc, "STREAM.CREATE.FITS", {"name": "FITS", "subjects": [_deep(DEEP_LEVELS, "fits")]})
        await nc.close()
        return deep, fits

    deep, fits = run(create())
    assert _error(deep) == (500, 10052), deep
    assert "max_topic_levels" in deep["error"]["description"]
    assert _error(fits) is None, fits
    assert _stream_names(broker.url) == ["FITS"]
    assert sorted(os.listdir(str(tmp_path / "data" / "streams"))) == ["FITS"]
    broker.stop()

    again = start_broker(**{"broker.max_topic_levels": DEEP_LEVELS})
    assert _stream_names(again.url) == ["FITS"]


def test_a_stream_update_to_a_deeper_subject_changes_nothing(start_broker):
    broker = start_broker(**{"broker.max_topic_levels": DEEP_LEVELS})

    async def update():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="UPD", subjects=["upd.a"])
        await js.publish("upd.a", b"1")
        refused = await _api(nc, "STREAM.UPDATE.UPD", {"name": "UPD", "subjects": ["upd.a", _deep(DEEP_LEVELS + 1)]})
        info = await js.stream_info("UPD")
        await js.publish("upd.a", b"2")
        await nc.close()
        return refused, info

    refused, info = run(update())
    assert _error(refused) == (500, 10052), refused
    assert info.config.subjects == ["upd.a"]
    broker.stop()

    again = start_broker(**{"broker.max_topic_levels": DEEP_LEVELS})

    async def check():
        nc, js = await _connect(again.url)
        info = await js.stream_info("UPD")
        await nc.close()
        return info

    info = run(check())
    assert info.config.subjects == ["upd.a"]
    assert info.state.messages == 2


def test_lowered_max_topic_levels_leaves_that_stream_out_and_serves_the_rest(tmp_path, twistd):
    """Before: twistd exited with status 1 on every start until the stream's
    files were deleted by hand."""
    data_dir = tmp_path / "data"
    broker = twistd(data_dir, "first")

    async def fill():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="DEEP", subjects=[_deep(6) + ".>"], storage=StorageType.FILE)
        await js.add_stream(name="KEEP", subjects=["keep.>"], storage=StorageType.FILE)
        for n in range(3):
            await js.publish(_deep(6) + ".x", b"d%d" % n)
            await js.publish("keep.x", b"k%d" % n)
        for stream in ("DEEP", "KEEP"):
            await js.add_consumer(stream, ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT))
        psub = await js.pull_subscribe_bind("reader", stream="KEEP")
        msgs = await psub.fetch(1, timeout=10)
        await msgs[0].ack_sync()
        await asyncio.sleep(0.5)  # the consumer state is saved within 50 ms
        await nc.close()

    run(fill())
    broker.stop()
    broker = twistd(data_dir, "lowered", "--broker-max-topic-levels", "4")  # fails the test if it does not start
    log = broker.log()
    assert "stream DEEP not restored" in log and "max_topic_levels" in log, log

    async def lowered():
        nc, js = await _connect(broker.url)
        names = (await _api(nc, "STREAM.NAMES"))["streams"]
        missing = await _api(nc, "STREAM.INFO.DEEP")
        taken = await _api(nc, "STREAM.CREATE.DEEP", {"name": "DEEP", "subjects": ["other"]})
        psub = await js.pull_subscribe_bind("reader", stream="KEEP")
        msgs = await psub.fetch(2, timeout=10)
        ack = await js.publish("keep.x", b"k3")
        await nc.close()
        return names, missing, taken, [m.data for m in msgs], ack.seq

    names, missing, taken, data, seq = run(lowered())
    assert names == ["KEEP"]
    assert _error(missing) == (404, 10059)
    assert _error(taken) == (400, 10058), taken  # its files are still there
    assert data == [b"k1", b"k2"]
    assert seq == 4
    broker.stop()

    # The limit raised again: the stream is back as it was, consumer and all.
    broker = twistd(data_dir, "raised")

    info, msgs = run(_info_and_fetch(broker.url, "DEEP", "reader", 3))
    data = [m.data for m in msgs]
    assert (info.state.messages, info.state.last_seq) == (3, 3)
    assert data == [b"d0", b"d1", b"d2"]
    broker.stop()


def test_a_stream_left_out_at_start_up_can_be_deleted(start_broker, tmp_path):
    """STREAM.DELETE removes the files of a stream that start-up left out;
    then the name can be created anew, without the old messages."""
    broker = start_broker(**{"broker.max_topic_levels": 16})

    async def fill():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="OLD", subjects=[_deep(12, "old")])
        await js.publish(_deep(12, "old"), b"old")
        await nc.close()

    run(fill())
    broker.stop()
    with LogCapture() as captured:
        broker = start_broker(**{"broker.max_topic_levels": DEEP_LEVELS})
    assert any("stream OLD not restored" in line for line in captured.lines()), captured.lines()

    async def delete_and_create():
        nc, js = await _connect(broker.url)
        deleted = await _api(nc, "STREAM.DELETE.OLD")
        await js.add_stream(name="OLD", subjects=["old"])
        info = await js.stream_info("OLD")
        await nc.close()
        return deleted, info

    deleted, info = run(delete_and_create())
    assert deleted.get("success") is True, deleted
    assert (info.state.messages, info.state.last_seq) == (0, 0)


# -- 2. numbers that do not fit ---------------------------------------------------------------


def test_purge_beyond_the_sequence_range_is_refused_and_publishing_goes_on(start_broker):
    """nats-server decodes seq and keep as uint64 (400 10025 for what does not
    fit). FlowMQ's store holds sequences up to 2**63 - 1 and refuses a purge
    beyond (before: success, then every publish 503 and a broken restart)."""
    broker = start_broker()

    async def scenario():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="P", subjects=["p"])
        for n in range(3):
            await js.publish("p", b"%d" % n)
        answers = {}
        for label, body in (("2**70", {"seq": 2 ** 70}), ("2**64", {"seq": 2 ** 64}), ("-1", {"seq": -1}),
                            ("2**64-1", {"seq": 2 ** 64 - 1}), ("2**63", {"seq": 2 ** 63}),
                            ("keep 2**64", {"keep": 2 ** 64})):
            answers[label] = _error(await _api(nc, "STREAM.PURGE.P", body))
        gets = [_error(await _api(nc, "STREAM.MSG.GET.P", {"seq": seq})) for seq in (2 ** 70, 2 ** 64 - 1)]
        deletes = [_error(await _api(nc, "STREAM.MSG.DELETE.P", {"seq": seq})) for seq in (2 ** 64, 2 ** 64 - 1)]
        ack = await js.publish("p", b"after")
        info = await js.stream_info("P")
        await nc.close()
        return answers, gets, deletes, ack, info

    answers, gets, deletes, ack, info = run(scenario())
    assert answers == {"2**70": (400, 10025), "2**64": (400, 10025), "-1": (400, 10025),
                       "2**64-1": (400, 10003), "2**63": (400, 10003), "keep 2**64": (400, 10025)}
    assert gets == [(400, 10025), (404, 10037)]
    assert deletes == [(400, 10025), (400, 10043)]
    assert ack.seq == 4
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (4, 1, 4)


def test_purge_to_a_high_sequence_survives_a_restart_with_a_durable_consumer(start_broker):
    """After a purge to seq n the next message is n, also after a restart,
    and a durable consumer goes on from there; at the last sequence a stream
    can have, one more publish is refused (not a crash) and nothing breaks."""
    high = 2 ** 40
    broker = start_broker()

    async def before():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="HIGH", subjects=["high"])
        await js.add_consumer("HIGH", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT))
        await js.publish("high", b"1")
        purged = await _api(nc, "STREAM.PURGE.HIGH", {"seq": high})
        ack = await js.publish("high", b"2")
        psub = await js.pull_subscribe_bind("d", stream="HIGH")
        msgs = await psub.fetch(1, timeout=10)
        await msgs[0].ack_sync()
        await asyncio.sleep(0.5)  # the consumer state is saved within 50 ms
        await nc.close()
        return purged, ack.seq, [(m.metadata.sequence.stream, m.data) for m in msgs]

    purged, seq, got = run(before())
    assert purged.get("success") is True, purged
    assert seq == high
    assert got == [(high, b"2")]
    broker.stop()
    broker = start_broker()

    async def after():
        nc, js = await _connect(broker.url)
        info = await js.stream_info("HIGH")
        ack = await js.publish("high", b"3")
        psub = await js.pull_subscribe_bind("d", stream="HIGH")
        msgs = await psub.fetch(1, timeout=10)
        await msgs[0].ack_sync()
        # To the very last sequence: it takes one message, and refuses the next.
        purged = await _api(nc, "STREAM.PURGE.HIGH", {"seq": LAST_SEQ})
        last = await js.publish("high", b"last")
        with pytest.raises(nats.js.errors.APIError) as refused:
            await js.publish("high", b"beyond")
        await asyncio.sleep(0.5)
        await nc.close()
        return info, ack.seq, [(m.metadata.sequence.stream, m.data) for m in msgs], purged, last.seq, refused.value

    info, seq, got, purged, last, refused = run(after())
    assert (info.state.first_seq, info.state.last_seq) == (high, high)
    assert seq == high + 1
    assert got == [(high + 1, b"3")]
    assert purged.get("success") is True, purged
    assert last == LAST_SEQ
    assert refused.code == 503 and "last sequence" in refused.description, refused
    broker.stop()
    broker = start_broker()

    info, msgs = run(_info_and_fetch(broker.url, "HIGH", "d", 1))
    got = [(m.metadata.sequence.stream, m.data) for m in msgs]
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (1, LAST_SEQ, LAST_SEQ)
    assert got == [(LAST_SEQ, b"last")]


def test_numbers_that_do_not_fit_are_refused_and_nothing_is_stored(start_broker):
    """Configuration integers are checked against nats-server's Go types
    (400 10025), a start sequence against what a stream can have; a consumer
    refused leaves nothing, also after a restart."""
    broker = start_broker()
    by_start = {"deliver_policy": "by_start_sequence", "ack_policy": "explicit"}

    async def requests():
        nc, js = await _connect(broker.url)
        streams = [_error(await _api(nc, "STREAM.CREATE.N", dict({"name": "N", "subjects": ["n"]}, **extra)))
                   for extra in ({"max_msgs": 2 ** 63}, {"max_msg_size": 2 ** 31}, {"max_age": 2 ** 70})]
        await js.add_stream(name="N", subjects=["n"])
        consumers = []
        for name, extra in (("a", {"opt_start_seq": 2 ** 70}), ("b", {"opt_start_seq": 2 ** 64}),
                            ("c", {"opt_start_seq": 2 ** 64 - 1}), ("d", {"opt_start_seq": 2 ** 63}),
                            ("e", {"ack_wait": 2 ** 63}), ("f", {"backoff": [2 ** 63], "max_deliver": 5}),
                            ("g", {"opt_start_seq": LAST_SEQ})):
            config = dict(by_start if "opt_start_seq" in extra else {"ack_policy": "explicit"},
                          durable_name=name, **extra)
            consumers.append(_error(await _api(nc, "CONSUMER.CREATE.N.%s" % name,
                                               {"stream_name": "N", "config": config})))
        names = (await _api(nc, "CONSUMER.NAMES.N"))["consumers"]
        await nc.close()
        return streams, consumers, names

    streams, consumers, names = run(requests())
    assert streams == [(400, 10025)] * 3
    assert consumers == [(400, 10025), (400, 10025), (400, 10003), (400, 10003), (400, 10025), (400, 10025), None]
    assert names == ["g"]
    broker.stop()
    broker = start_broker()

    async def after():
        nc, _js = await _connect(broker.url)
        names = (await _api(nc, "CONSUMER.NAMES.N"))["consumers"]
        await nc.close()
        return names

    assert run(after()) == ["g"]


def test_pull_request_numbers_that_do_not_fit_get_400(start_broker):
    """nats-server answers a pull request whose batch, expires or max_bytes
    does not fit its Go int with a 400 status."""
    broker = start_broker()

    async def scenario():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="PULL", subjects=["pull"])
        await js.add_consumer("PULL", ConsumerConfig(durable_name="p", ack_policy=AckPolicy.EXPLICIT))
        statuses = []
        for body in ({"batch": 1, "expires": 2 ** 63}, {"batch": 1, "max_bytes": 2 ** 70, "no_wait": True},
                     {"batch": 2 ** 63}):
            answer = await nc.request("$JS.API.CONSUMER.MSG.NEXT.PULL.p", json.dumps(body).encode(), timeout=10)
            statuses.append(answer.headers.get("Status") if answer.headers else None)
        await nc.close()
        return statuses

    assert run(scenario()) == ["400", "400", "400"]


# -- 3. one failing store never stops the others ----------------------------------------------


class _BrokenStore:
    """The stream BROKEN's FileStore.flush fails with a non-disk error (as
    the record codec's struct.error did); the engine's sync and compaction
    calls of the others are counted (an fsync starts with take_unsynced, a
    compaction with plan_compaction)."""

    def __init__(self, monkeypatch):
        self.synced = {}
        self.compacted = {}
        flush, sync, compact = FileStore.flush, FileStore.take_unsynced, FileStore.plan_compaction

        def broken_flush(store):
            if store.name == "BROKEN":
                raise RuntimeError("a bug in one store")
            return flush(store)

        def counted(real, counts):
            def call(store):
                counts[store.name] = counts.get(store.name, 0) + 1
                return real(store)
            return call

        monkeypatch.setattr(FileStore, "flush", broken_flush)
        monkeypatch.setattr(FileStore, "take_unsynced", counted(sync, self.synced))
        monkeypatch.setattr(FileStore, "plan_compaction", counted(compact, self.compacted))


def test_a_failing_store_does_not_stop_the_others_from_reaching_the_disk(start_broker, tmp_path, monkeypatch):
    """Before: the exception left the engine's loops, so the stores after the
    broken one were no longer fsynced (nor compacted), and a healthy stream's
    publish in the same batch was refused with it."""
    broker = start_broker(**{"storage.fsync_interval_ms": 20, "storage.compact_interval": 0.2})

    async def setup():
        nc, js = await _connect(broker.url)
        await js.add_stream(name="BROKEN", subjects=["broken"], storage=StorageType.FILE)
        await js.add_stream(name="HEALTHY", subjects=["healthy"], storage=StorageType.FILE)
        await nc.close()

    run(setup())
    broken = _BrokenStore(monkeypatch)

    async def publish():
        nc, js = await _connect(broker.url)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox + ".*")
        # One write, so one batch of the broker: the broken store's flush first.
        await nc.publish("broken", b"lost", reply=inbox + ".broken")
        await nc.publish("healthy", b"payload-0", reply=inbox + ".healthy")
        answers = {}
        for _ in range(2):
            msg = await sub.next_msg(timeout=10)
            answers[msg.subject.rsplit(".", 1)[1]] = json.loads(msg.data)
        acks = [await js.publish("healthy", b"payload-%d" % n) for n in range(1, 4)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (broken.synced.get("HEALTHY") and broken.compacted.get("HEALTHY")):
            await asyncio.sleep(0.05)
        await nc.close()
        return answers, acks

    with LogCapture() as captured:
        answers, acks = run(publish(), timeout=60)
    assert "error" in answers["broken"], answers
    assert answers["healthy"].get("seq") == 1, answers
    assert [ack.seq for ack in acks] == [2, 3, 4]
    assert broken.synced.get("HEALTHY") and broken.compacted.get("HEALTHY"), (broken.synced, broken.compacted)
    assert any("BROKEN" in line for line in captured.lines()), captured.lines()
    # Every acknowledged message is in the healthy stream's file.
    with open(_segments(tmp_path / "data", "HEALTHY")[-1], "rb") as handle:
        on_disk = handle.read()
    assert all(b"payload-%d" % n in on_disk for n in range(4))


# -- 4. open files --------------------------------------------------------------------------


def _open_file_limit(limit):
    def set_limit():
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return set_limit


def test_file_streams_are_limited_by_the_open_file_limit(tmp_path, twistd):
    """One open file per file stream, and at most half of RLIMIT_NOFILE file
    streams: the next STREAM.CREATE gets 400 10027 naming the limit (before:
    two files per stream, and a 500 "internal error: OSError" somewhere
    before the limit, with files left behind)."""
    data_dir = tmp_path / "data"
    # Without MQTT, whose retained messages take one of the engine's file streams.
    broker = twistd(data_dir, "first", "--mqtt-enabled", "false", preexec_fn=_open_file_limit(64))
    assert "32 of them on file" in broker.log() and "RLIMIT_NOFILE 64" in broker.log(), broker.log()

    async def fill():
        nc, js = await _connect(broker.url)
        answers = []
        for n in range(33):
            answers.append(await _api(nc, "STREAM.CREATE.F%d" % n, {"name": "F%d" % n, "subjects": ["f.%d" % n]}))
            if not _error(answers[-1]):
                await js.publish("f.%d" % n, b"m%d" % n)
        memory = await _api(nc, "STREAM.CREATE.M", {"name": "M", "subjects": ["m"], "storage": "memory"})
        await nc.close()
        return answers, memory

    answers, memory = run(fill(), timeout=120)
    assert [_error(answer) for answer in answers[:32]] == [None] * 32, answers
    assert _error(answers[32]) == (400, 10027), answers[32]
    assert "RLIMIT_NOFILE 64" in answers[32]["error"]["description"]
    assert _error(memory) is None, memory
    assert sorted(os.listdir(str(data_dir / "streams"))) == sorted("F%d" % n for n in range(32))
    broker.stop()

    broker = twistd(data_dir, "second", "--mqtt-enabled", "false", preexec_fn=_open_file_limit(64))

    async def check():
        nc, js = await _connect(broker.url)
        infos = [await js.stream_info("F%d" % n) for n in range(32)]
        await nc.close()
        return [info.state.messages for info in infos]

    assert run(check(), timeout=120) == [1] * 32
    broker.stop()
