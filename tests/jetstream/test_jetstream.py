"""JetStream through nats-py: streams, publishing rules, push and pull consumers.

Every test talks to a real broker over the wire with the nats-py client
(its JetStream context and manager), as users do; the key-value and object
stores, restarts and crashes have their own files.
"""

from __future__ import annotations

import asyncio
import datetime

import nats
import nats.js.errors
import pytest
from nats.js.api import (
    AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType,
)

from tests.conftest import flushed, run


async def _connect(broker):
    nc = await nats.connect(broker.url)
    return nc, nc.jetstream()


# -- the spec page ---------------------------------------------------------------------


def test_spec_jetstream_example(broker, capsys):
    """The spec's JetStream example, verbatim after creating the stream."""
    async def main():
        nc = await nats.connect(broker.url)
        await nc.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
        # Publish to JetStream
        js = nc.jetstream()
        await js.publish("orders.new", b'{"order_id": "12345"}')
        # Subscribe to JetStream
        sub = await js.subscribe("orders.new", durable="order-processor")
        async for msg in sub.messages:
            print(f"Received: {msg.data.decode()}")
            await msg.ack()
            break
        info = await js.consumer_info("ORDERS", "order-processor")
        await nc.close()
        return info

    info = run(main())
    assert capsys.readouterr().out == 'Received: {"order_id": "12345"}\n'
    assert info.num_ack_pending == 0 or info.delivered.stream_seq == 1


def test_spec_durable_subscription_gets_what_it_missed(broker):
    """The spec's durable subscription, served by a JetStream durable consumer:
    a subscriber that goes away and comes back with the same durable name
    gets what was published meanwhile, and nothing twice."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="PROCESS", subjects=["orders.process"])
        got = []

        async def message_handler(msg):
            got.append(msg.data)
            await msg.ack()

        sub = await js.subscribe("orders.process", durable="order-processor", cb=message_handler)
        await js.publish("orders.process", b"1")
        await _until(lambda: got == [b"1"])
        await sub.unsubscribe()
        await nc.close()

        nc, js = await _connect(broker)  # meanwhile, with the subscriber gone
        await js.publish("orders.process", b"2")
        await js.publish("orders.process", b"3")
        await nc.close()

        nc, js = await _connect(broker)
        await js.subscribe("orders.process", durable="order-processor", cb=message_handler)
        await _until(lambda: len(got) >= 3)
        await asyncio.sleep(0.2)
        await nc.close()
        return got

    assert run(main()) == [b"1", b"2", b"3"]


async def _until(condition, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in %.1f s" % timeout)
        await asyncio.sleep(0.01)


# -- streams ---------------------------------------------------------------------------


def test_stream_create_info_update_delete_and_listings(broker):
    async def main():
        nc, js = await _connect(broker)
        created = await js.add_stream(name="S1", subjects=["a.*", "b.>"], max_msgs=100, storage=StorageType.FILE)
        assert created.config.subjects == ["a.*", "b.>"]
        assert created.config.max_msgs == 100
        assert created.config.retention == RetentionPolicy.LIMITS
        assert created.config.duplicate_window == 120.0
        # The same configuration again is fine; another one is refused.
        again = await js.add_stream(name="S1", subjects=["a.*", "b.>"], max_msgs=100)
        assert again.config.name == "S1"
        with pytest.raises(nats.js.errors.BadRequestError) as refused:
            await js.add_stream(name="S1", subjects=["a.*"], max_msgs=5)
        assert refused.value.err_code == 10058
        # Overlapping subjects with another stream.
        with pytest.raises(nats.js.errors.BadRequestError) as overlap:
            await js.add_stream(name="S2", subjects=["a.x"])
        assert overlap.value.err_code == 10065
        await js.add_stream(name="S2", subjects=["c"], storage=StorageType.MEMORY)

        for i in range(3):
            await js.publish("a.%d" % i, b"x" * 10)
        info = await js.stream_info("S1", subjects_filter=">")
        assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (3, 1, 3)
        assert info.state.subjects == {"a.0": 1, "a.1": 1, "a.2": 1}
        updated = await js.update_stream(name="S1", subjects=["a.*", "b.>", "d"], max_msgs=2)
        assert updated.config.max_msgs == 2
        assert updated.state.messages == 2  # the new limit applies at once

        assert await js.find_stream_name_by_subject("b.q.r") == "S1"
        assert await js.find_stream_name_by_subject("c") == "S2"
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.find_stream_name_by_subject("zzz")
        names = sorted(info.config.name for info in await js.streams_info())
        assert names == ["S1", "S2"]
        account = await js.account_info()
        assert account.streams == 2

        assert await js.delete_stream("S2")
        with pytest.raises(nats.js.errors.NotFoundError) as missing:
            await js.stream_info("S2")
        assert missing.value.err_code == 10059
        await nc.close()

    run(main())


def test_publish_to_a_subject_without_stream_has_no_responders(broker):
    async def main():
        nc, js = await _connect(broker)
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await js.publish("nobody.here", b"x", timeout=2)
        await nc.close()

    run(main())


def test_puback_and_expectations(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="EXP", subjects=["exp.>"])
        ack = await js.publish("exp.a", b"1")
        assert (ack.stream, ack.seq, ack.duplicate) == ("EXP", 1, None)
        ack = await js.publish("exp.a", b"2", stream="EXP")
        assert ack.seq == 2
        with pytest.raises(nats.js.errors.BadRequestError) as wrong:
            await js.publish("exp.a", b"3", stream="OTHER")
        assert wrong.value.err_code == 10060

        ok = await js.publish("exp.b", b"x", headers={"Nats-Expected-Last-Sequence": "2"})
        assert ok.seq == 3
        with pytest.raises(nats.js.errors.BadRequestError) as stale:
            await js.publish("exp.b", b"x", headers={"Nats-Expected-Last-Sequence": "2"})
        assert stale.value.err_code == 10071
        assert stale.value.description == "wrong last sequence: 3"

        ok = await js.publish("exp.a", b"x", headers={"Nats-Expected-Last-Subject-Sequence": "2"})
        assert ok.seq == 4
        with pytest.raises(nats.js.errors.BadRequestError):
            await js.publish("exp.a", b"x", headers={"Nats-Expected-Last-Subject-Sequence": "2"})
        ok = await js.publish("exp.new", b"x", headers={"Nats-Expected-Last-Subject-Sequence": "0"})
        assert ok.seq == 5

        await js.publish("exp.c", b"x", headers={"Nats-Msg-Id": "m-1"})
        ok = await js.publish("exp.c", b"y", headers={"Nats-Expected-Last-Msg-Id": "m-1"})
        assert ok.seq == 7
        with pytest.raises(nats.js.errors.BadRequestError) as wrong_id:
            await js.publish("exp.c", b"z", headers={"Nats-Expected-Last-Msg-Id": "m-0"})
        assert wrong_id.value.err_code == 10070
        await nc.close()

    run(main())


def test_duplicates_within_the_window_are_not_stored_twice(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="DEDUPE", subjects=["dd"], duplicate_window=2)
        first = await js.publish("dd", b"a", headers={"Nats-Msg-Id": "order-1"})
        second = await js.publish("dd", b"a", headers={"Nats-Msg-Id": "order-1"})
        other = await js.publish("dd", b"b", headers={"Nats-Msg-Id": "order-2"})
        info = await js.stream_info("DEDUPE")
        await nc.close()
        return first, second, other, info

    first, second, other, info = run(main())
    assert (first.seq, first.duplicate) == (1, None)
    assert (second.seq, second.duplicate) == (1, True)
    assert other.seq == 2
    assert info.state.messages == 2


def test_limits_discard_old_and_new_and_message_size(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="OLD", subjects=["old"], max_msgs=3)
        for i in range(5):
            await js.publish("old", b"%d" % i)
        old = await js.stream_info("OLD")
        await js.add_stream(name="NEW", subjects=["new"], max_msgs=2, discard=DiscardPolicy.NEW, max_msg_size=10)
        await js.publish("new", b"1")
        await js.publish("new", b"2")
        with pytest.raises(nats.js.errors.ServiceUnavailableError) as full:
            await js.publish("new", b"3")
        with pytest.raises(nats.js.errors.BadRequestError) as too_big:
            await js.publish("new", b"x" * 11)
        await js.add_stream(name="PER", subjects=["per.*"], max_msgs_per_subject=1)
        for subject in ("per.a", "per.a", "per.b"):
            await js.publish(subject, b"x")
        per = await js.stream_info("PER")
        await nc.close()
        return old, full.value, too_big.value, per

    old, full, too_big, per = run(main())
    assert (old.state.messages, old.state.first_seq, old.state.last_seq) == (3, 3, 5)
    assert full.description == "maximum messages exceeded"
    assert too_big.err_code == 10054
    assert (per.state.messages, per.state.first_seq) == (2, 2)


def test_max_age_expires_messages(broker):
    async def main():
        nc, js = await _connect(broker)
        # Half a second: long enough for "before" to see the message on a loaded machine,
        # short enough that the stream's expiry timer runs at that period (min(1 s, max_age)).
        await js.add_stream(name="AGE", subjects=["age"], max_age=0.5)
        await js.publish("age", b"x")
        deadline = asyncio.get_running_loop().time() + 3  # max_age + one timer period, and slack
        before = (await js.stream_info("AGE")).state.messages
        after = await js.stream_info("AGE")
        while after.state.messages and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            after = await js.stream_info("AGE")
        await nc.close()
        return before, after

    before, after = run(main())
    assert before == 1
    assert after.state.messages == 0 and after.state.last_seq == 1


def test_purge_variants_get_and_delete_messages(broker):
    async def main():
        nc, js = await _connect(broker)
        jsm = js
        await js.add_stream(name="P", subjects=["p.*"])
        for i in range(10):
            await js.publish("p.%s" % ("a" if i % 2 else "b"), b"%d" % i)
        message = await jsm.get_msg("P", 3)
        assert (message.subject, message.data, message.seq) == ("p.b", b"2", 3)
        last = await jsm.get_last_msg("P", "p.a")
        assert (last.seq, last.data) == (10, b"9")
        assert await jsm.delete_msg("P", 3)
        with pytest.raises(nats.js.errors.NotFoundError):
            await jsm.get_msg("P", 3)
        assert await jsm.purge_stream("P", subject="p.a", keep=2)
        info = await js.stream_info("P", subjects_filter=">")
        assert info.state.subjects == {"p.a": 2, "p.b": 4}
        assert await jsm.purge_stream("P", seq=8)
        info = await js.stream_info("P")
        assert info.state.first_seq == 8 and info.state.messages == 3  # 8 and 10 (p.a), 9 (p.b)
        assert await jsm.purge_stream("P")
        info = await js.stream_info("P")
        await nc.close()
        return info

    info = run(main())
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (0, 11, 10)


def test_headers_are_stored_and_delivered(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="H", subjects=["h"])
        await js.publish("h", b"body", headers={"source": "order-service", "version": "1.0"})
        sub = await js.pull_subscribe("h", durable="reader")
        [msg] = await sub.fetch(1, timeout=2)
        stored = await js.get_msg("H", 1)
        await nc.close()
        return msg, stored

    msg, stored = run(main())
    assert msg.headers == {"source": "order-service", "version": "1.0"}
    assert stored.headers == {"source": "order-service", "version": "1.0"}


def test_core_publishers_are_stored_too(broker):
    """A stream is a destination of the router: a plain NATS publish (and so
    any protocol's) on its subjects is stored, while core subscribers get it."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="CORE", subjects=["core.>"])
        live = await nc.subscribe("core.>")
        await nc.publish("core.one", b"1")
        await nc.publish("core.two", b"2")
        await flushed(nc)
        first = await live.next_msg(timeout=2)
        info = await js.stream_info("CORE")
        await nc.close()
        return first, info

    first, info = run(main())
    assert first.data == b"1"
    assert info.state.messages == 2


# -- consumers -------------------------------------------------------------------------


def test_pull_consumer_batches_no_wait_and_expiry(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="PULL", subjects=["pull.>"])
        for i in range(5):
            await js.publish("pull.x", b"%d" % i)
        sub = await js.pull_subscribe("pull.>", durable="worker")
        batch = await sub.fetch(3, timeout=2)
        assert [m.data for m in batch] == [b"0", b"1", b"2"]
        for m in batch:
            await m.ack()
        rest = await sub.fetch(10, timeout=1)
        assert [m.data for m in rest] == [b"3", b"4"]
        metadata = rest[-1].metadata
        assert (metadata.sequence.stream, metadata.sequence.consumer, metadata.num_pending) == (5, 5, 0)
        assert metadata.stream == "PULL" and metadata.consumer == "worker"
        for m in rest:
            await m.ack_sync()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.5)
        info = await js.consumer_info("PULL", "worker")
        assert (info.num_ack_pending, info.num_pending, info.delivered.stream_seq) == (0, 0, 5)
        assert info.ack_floor.stream_seq == 5
        # A waiting fetch gets a message published while it waits.
        waiter = asyncio.ensure_future(sub.fetch(1, timeout=3))
        await asyncio.sleep(0.3)
        await js.publish("pull.y", b"late")
        [late] = await waiter
        assert late.data == b"late"
        await nc.close()

    run(main())


def test_pull_max_bytes_and_no_wait_statuses(broker):
    """Pull requests as nats-server answers them (nats-py's fetch has no
    max_bytes, so the request is written by hand)."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="MB", subjects=["mb"])
        for _ in range(3):
            await js.publish("mb", b"x" * 100)
        await js.add_consumer("MB", durable_name="bytes", ack_policy=AckPolicy.NONE)
        inbox = await nc.subscribe("pull-inbox")
        # A delivery counts subject + ack reply + payload, 2 + 44 + 100 here:
        # one fits in 250 bytes, the second ends the request with 409.
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.MB.bytes", b'{"batch":3,"max_bytes":250}', reply="pull-inbox")
        got = [await inbox.next_msg(timeout=2) for _ in range(2)]
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.MB.bytes", b'{"batch":5,"no_wait":true}', reply="pull-inbox")
        rest = [await inbox.next_msg(timeout=2) for _ in range(3)]
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.MB.bytes", b'{"batch":1,"expires":200000000}', reply="pull-inbox")
        expired = await inbox.next_msg(timeout=2)
        await nc.close()
        return got, rest, expired

    got, rest, expired = run(main())
    assert got[0].data == b"x" * 100
    assert got[1].headers.get("Status") == "409" and got[1].data == b""
    assert [m.data for m in rest[:2]] == [b"x" * 100] * 2
    assert rest[2].headers.get("Status") == "404"
    assert expired.headers.get("Status") == "408"


def test_redelivery_after_ack_wait_nak_and_term(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="RD", subjects=["rd"])
        await js.publish("rd", b"job")
        sub = await js.pull_subscribe("rd", durable="slow", config=ConsumerConfig(ack_wait=0.5))
        [first] = await sub.fetch(1, timeout=1)  # not acked
        await asyncio.sleep(0.8)
        [again] = await sub.fetch(1, timeout=2)
        assert again.data == b"job"
        assert again.metadata.num_delivered == 2
        await again.nak()
        [third] = await sub.fetch(1, timeout=2)
        assert third.metadata.num_delivered == 3
        await third.in_progress()
        await third.term()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1)
        info = await js.consumer_info("RD", "slow")
        await nc.close()
        return first, info

    first, info = run(main())
    assert first.metadata.num_delivered == 1
    assert info.num_ack_pending == 0


def test_nak_with_delay_and_max_deliver(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="ND", subjects=["nd"])
        await js.publish("nd", b"x")
        sub = await js.pull_subscribe("nd", durable="d", config=ConsumerConfig(max_deliver=2, ack_wait=0.3))
        [m] = await sub.fetch(1, timeout=1)
        await m.nak(delay=0.5)
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.3)
        [m2] = await sub.fetch(1, timeout=2)
        assert m2.metadata.num_delivered == 2
        await asyncio.sleep(0.6)  # ack wait passes; max_deliver reached: no third delivery
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.5)
        await nc.close()

    run(main())


def test_push_consumer_with_queue_group_flow_control_and_heartbeats(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="PUSH", subjects=["push.>"])
        got = {"a": [], "b": []}

        def member(name):
            async def cb(msg):
                got[name].append(msg.data)
                await msg.ack()
            return cb

        await js.subscribe("push.q", queue="workers", cb=member("a"))
        await js.subscribe("push.q", queue="workers", cb=member("b"))
        for i in range(20):
            await js.publish("push.q", b"%d" % i)
        await _until(lambda: len(got["a"]) + len(got["b"]) == 20)
        # Flow control and idle heartbeats, as ordered consumers use them.
        big = b"z" * 100_000
        for _ in range(10):
            await js.publish("push.big", big)
        ordered = await js.subscribe("push.big", ordered_consumer=True, idle_heartbeat=0.2)
        received = [await ordered.next_msg(timeout=3) for _ in range(10)]
        await asyncio.sleep(0.5)  # heartbeats flow while idle; the subscription keeps working
        await js.publish("push.big", b"after")
        last = await ordered.next_msg(timeout=3)
        await nc.close()
        return got, received, last

    got, received, last = run(main())
    assert sorted(got["a"] + got["b"], key=int) == [b"%d" % i for i in range(20)]
    assert got["a"] and got["b"]
    assert all(m.data == b"z" * 100_000 for m in received)
    assert last.data == b"after"


def test_deliver_policies(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="DP", subjects=["dp.*"])
        for subject, data in (("dp.a", b"1"), ("dp.b", b"2"), ("dp.a", b"3"), ("dp.c", b"4")):
            await js.publish(subject, data)
        middle = datetime.datetime.now(datetime.timezone.utc)
        await asyncio.sleep(0.05)
        await js.publish("dp.b", b"5")
        results = {}
        for name, config in {
            "all": ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            "last": ConsumerConfig(deliver_policy=DeliverPolicy.LAST),
            "new": ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
            "seq": ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=3),
            "time": ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=middle),
            "lps": ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
        }.items():
            sub = await js.pull_subscribe("dp.*", durable=name, config=config)
            try:
                msgs = await sub.fetch(10, timeout=0.5)
            except nats.errors.TimeoutError:
                msgs = []
            results[name] = [m.data for m in msgs]
        filtered = await js.pull_subscribe("dp.a", durable="only-a")
        results["filtered"] = [m.data for m in await filtered.fetch(10, timeout=0.5)]
        await nc.close()
        return results

    results = run(main())
    assert results["all"] == [b"1", b"2", b"3", b"4", b"5"]
    assert results["last"] == [b"5"]
    assert results["new"] == []
    assert results["seq"] == [b"3", b"4", b"5"]
    assert results["time"] == [b"5"]
    assert results["lps"] == [b"3", b"4", b"5"]
    assert results["filtered"] == [b"1", b"3"]


def test_work_queue_retention(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="WQ", subjects=["jobs.*"], retention=RetentionPolicy.WORK_QUEUE)
        for i in range(4):
            await js.publish("jobs.%s" % ("x" if i < 2 else "y"), b"%d" % i)
        sub = await js.pull_subscribe("jobs.x", durable="x-worker")
        msgs = await sub.fetch(2, timeout=1)
        for m in msgs:
            await m.ack_sync()
        after = await js.stream_info("WQ")
        # One consumer per subject: an overlapping one is refused; ack none is refused.
        with pytest.raises(nats.js.errors.BadRequestError) as overlap:
            await js.add_consumer("WQ", durable_name="again", filter_subject="jobs.x", ack_policy=AckPolicy.EXPLICIT)
        with pytest.raises(nats.js.errors.BadRequestError) as ack_none:
            await js.add_consumer("WQ", durable_name="none", filter_subject="jobs.y", ack_policy=AckPolicy.NONE)
        await nc.close()
        return after, overlap.value, ack_none.value

    after, overlap, ack_none = run(main())
    assert after.state.messages == 2  # the acked jobs are gone, jobs.y wait
    assert overlap.err_code == 10100
    assert ack_none.err_code == 10098


def test_interest_retention_drops_messages_all_consumers_acked(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="INT", subjects=["int"], retention=RetentionPolicy.INTEREST)
        await js.publish("int", b"nobody")  # no consumer yet: not kept
        one = await js.pull_subscribe("int", durable="one")
        two = await js.pull_subscribe("int", durable="two")
        await js.publish("int", b"both")
        [m1] = await one.fetch(1, timeout=1)
        await m1.ack_sync()
        kept = (await js.stream_info("INT")).state.messages
        [m2] = await two.fetch(1, timeout=1)
        await m2.ack_sync()
        gone = (await js.stream_info("INT")).state.messages
        await nc.close()
        return kept, gone

    assert run(main()) == (1, 0)


def test_consumer_api_names_list_delete_and_errors(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="C", subjects=["c.>"])
        await js.add_consumer("C", durable_name="dur", ack_policy=AckPolicy.EXPLICIT)
        await js.add_consumer("C", name="named", filter_subject="c.x", ack_policy=AckPolicy.EXPLICIT)
        ephemeral = await js.add_consumer("C", ack_policy=AckPolicy.EXPLICIT, inactive_threshold=60)
        infos = await js.consumers_info("C")
        names = sorted(info.name for info in infos)
        assert names == sorted(["dur", "named", ephemeral.name])
        with pytest.raises(nats.js.errors.NotFoundError) as missing:
            await js.consumer_info("C", "nope")
        assert missing.value.err_code == 10014
        with pytest.raises(nats.js.errors.BadRequestError) as not_subset:
            await js.add_consumer("C", durable_name="bad", filter_subject="other.x", ack_policy=AckPolicy.EXPLICIT)
        assert not_subset.value.err_code == 10093
        assert await js.delete_consumer("C", "named")
        infos = await js.consumers_info("C")
        await nc.close()
        return sorted(info.name for info in infos), ephemeral

    names, ephemeral = run(main())
    assert names == sorted(["dur", ephemeral.name])


def test_ephemeral_consumer_goes_after_its_subscriber(start_broker):
    broker = start_broker()

    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="EPH", subjects=["eph"])
        sub = await js.subscribe("eph", inactive_threshold=0.3)
        name = (await sub.consumer_info()).name
        await sub.unsubscribe()
        with pytest.raises(nats.js.errors.NotFoundError):
            for _ in range(80):  # 4 s at most: under the 5 s default threshold, so the 0.3 s given is what counts
                await js.consumer_info("EPH", name)
                await asyncio.sleep(0.05)
        await nc.close()

    run(main())


def test_bad_requests_get_json_errors(raw_client):
    client = raw_client()
    client.handshake()
    client.subscribe(b"reply")
    for subject, body in ((b"$JS.API.STREAM.CREATE.X", b"{not json"),
                          (b"$JS.API.STREAM.CREATE.X", b'{"name":"Y"}'),
                          (b"$JS.API.STREAM.CREATE.a/b", b'{"name":"a/b"}'),
                          (b"$JS.API.STREAM.INFO.NOPE", b"")):
        client.send(b"PUB %s reply %d\r\n%s\r\n" % (subject, len(body), body))
        header = client.read_line()
        assert header.startswith(b"MSG reply 1 ")
        document = client.read_exact(int(header.split()[-1]) + 2)
        assert b'"error":{"code":' in document
    # The broker is still fine.
    client.send(b"PING\r\n")
    assert client.read_line() == b"PONG"


def test_a_stream_on_everything_must_not_acknowledge(broker):
    """As nats-server: subjects that take in the API need no_ack."""
    async def main():
        nc, js = await _connect(broker)
        with pytest.raises(nats.js.errors.APIError) as refused:
            await js.add_stream(name="ALL", subjects=[">"])
        await js.add_stream(name="ALL", subjects=[">"], no_ack=True)
        await nc.publish("anything.at.all", b"x")
        await flushed(nc)
        info = await js.stream_info("ALL")
        await nc.close()
        return refused.value, info

    refused, info = run(main())
    assert refused.err_code == 10052
    assert info.state.messages >= 1


def test_pull_request_heartbeats(broker):
    """fetch(heartbeat=...): while a pull request waits, it gets idle
    heartbeats (so nats-py knows the server is there: FetchTimeoutError)."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="HB", subjects=["hb"])
        sub = await js.pull_subscribe("hb", durable="beats")
        with pytest.raises(nats.js.errors.FetchTimeoutError):
            await sub.fetch(1, timeout=1.0, heartbeat=0.2)
        waiter = asyncio.ensure_future(sub.fetch(1, timeout=3.0, heartbeat=0.2))
        await asyncio.sleep(0.6)
        await js.publish("hb", b"after some beats")
        [got] = await waiter
        # A heartbeat longer than half the expiry is refused, as by nats-server.
        inbox = await nc.subscribe("hb-inbox")
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.HB.beats",
                         b'{"batch":1,"expires":1000000000,"idle_heartbeat":600000000}', reply="hb-inbox")
        refused = await inbox.next_msg(timeout=2)
        await nc.close()
        return got, refused

    got, refused = run(main())
    assert got.data == b"after some beats"
    assert refused.headers.get("Status") == "400"
    assert "heartbeat value too large" in refused.headers.get("Description", "")
