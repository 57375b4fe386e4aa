"""JetStream edge cases: malformed input, nats-server semantics, state leaks.

Every scenario goes over the wire (raw NATS protocol bytes or nats-py).
"""

from __future__ import annotations

import asyncio
import json
import time

import nats
import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from tests.conftest import flushed, run


# -- helpers ---------------------------------------------------------------------------


class Api:
    """$JS.API requests with raw protocol bytes on one connection."""

    def __init__(self, client):
        self.client = client
        client.handshake()
        client.subscribe(b"_R.>", b"99")
        self.n = 0

    def pub(self, subject, payload=b"", reply=None, headers=None):
        subject = subject.encode() if isinstance(subject, str) else subject
        payload = payload.encode() if isinstance(payload, str) else payload
        reply_part = b"" if reply is None else b" " + (reply.encode() if isinstance(reply, str) else reply)
        if headers:
            block = b"NATS/1.0\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers) + b"\r\n"
            self.client.send(b"HPUB %s%s %d %d\r\n%s%s\r\n" % (
                subject, reply_part, len(block), len(block) + len(payload), block, payload))
        else:
            self.client.send(b"PUB %s%s %d\r\n%s\r\n" % (subject, reply_part, len(payload), payload))

    def read_msg(self):
        """(subject, reply, header block or None, payload) of the next MSG/HMSG; skips PINGs."""
        while True:
            line = self.client.read_line()
            if line == b"PING":
                self.client.send(b"PONG\r\n")
                continue
            if line == b"PONG":
                continue
            parts = line.split(b" ")
            if parts[0] == b"MSG":
                size = int(parts[-1])
                data = self.client.read_exact(size + 2)[:-2]
                reply = parts[3] if len(parts) == 5 else None
                return parts[1], reply, None, data
            if parts[0] == b"HMSG":
                hsize, size = int(parts[-2]), int(parts[-1])
                data = self.client.read_exact(size + 2)[:-2]
                reply = parts[3] if len(parts) == 6 else None
                return parts[1], reply, data[:hsize], data[hsize:]
            raise AssertionError("unexpected line %r" % line)

    def request(self, subject, payload=b"", headers=None):
        self.n += 1
        reply = "_R.%d" % self.n
        self.pub(subject, payload, reply, headers)
        _subject, _reply, _hdr, data = self.read_msg()
        assert _subject == reply.encode(), (_subject, data)
        return json.loads(data)

    def request_skipping(self, subject, payload=b""):
        """request(), passing over messages to other reply subjects."""
        self.n += 1
        reply = "_R.%d" % self.n
        self.pub(subject, payload, reply)
        while True:
            _subject, _reply, _hdr, data = self.read_msg()
            if _subject == reply.encode():
                return json.loads(data)

    def ping(self):
        self.client.send(b"PING\r\n")
        while True:
            line = self.client.read_line()
            if line == b"PONG":
                return
            if line == b"PING":
                self.client.send(b"PONG\r\n")
                continue
            raise AssertionError("unexpected %r" % line)

    def alive(self):
        """The broker still answers on this connection and on a new API request."""
        self.ping()
        info = self.request("$JS.API.INFO")
        assert "error" not in info, info


def _api(raw_client):
    return Api(raw_client())


def _stream(api, name="S", subjects=("s.>",), **extra):
    config = {"name": name, "subjects": list(subjects), "storage": "memory"}
    config.update(extra)
    answer = api.request("$JS.API.STREAM.CREATE." + name, json.dumps(config))
    assert "error" not in answer, answer
    return answer


def _consumer(api, stream="S", **config):
    """Create a consumer as nats-py does: a named one on CONSUMER.CREATE.<stream>.<name>."""
    name = config.get("name") or config.get("durable_name")
    subject = "$JS.API.CONSUMER.CREATE.%s" % stream + ("" if name is None else "." + name)
    answer = api.request(subject, json.dumps({"stream_name": stream, "config": config}))
    assert "error" not in answer, answer
    return answer


async def _connect(broker):
    nc = await nats.connect(broker.url)
    return nc, nc.jetstream()


async def _until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- malformed API input: an error answer, never a dropped connection -----------------


@pytest.mark.parametrize("request_", [
    ("$JS.API.STREAM.INFO.S", {"subjects_filter": 5}),
    ("$JS.API.STREAM.NAMES", {"subject": 5}),
    ("$JS.API.STREAM.LIST", {"subject": 5.5}),
    ("$JS.API.STREAM.PURGE.S", {"filter": 5}),
    ("$JS.API.STREAM.MSG.GET.S", {"last_by_subj": 5}),
    ("$JS.API.STREAM.MSG.GET.S", {"next_by_subj": 7, "seq": 1}),
])
def test_non_string_subject_fields_get_an_error(raw_client, request_):
    api = _api(raw_client)
    _stream(api)
    subject, body = request_
    answer = api.request(subject, json.dumps(body))
    assert answer["error"]["code"] == 400, answer
    api.alive()


def test_deeply_nested_json_request_gets_an_error(raw_client):
    api = _api(raw_client)
    answer = api.request("$JS.API.STREAM.NAMES", b"[" * 100_000)
    assert answer["error"]["code"] == 400, answer
    api.alive()


@pytest.mark.parametrize("config", [
    {"deliver_subject": 5},
    {"deliver_subject": {"a": 1}},
    {"filter_subjects": 5},
    {"durable_name": "d", "ack_policy": "explicit", "max_ack_pending": "many"},
    {"durable_name": "d", "max_waiting": "many"},
    {"durable_name": "d", "max_waiting": -5},
    {"durable_name": "d", "ack_policy": "explicit", "max_ack_pending": [1]},
])
def test_consumer_config_with_wrong_types_gets_an_error(raw_client, config):
    api = _api(raw_client)
    _stream(api)
    api.request("$JS.API.STREAM.CREATE.S", json.dumps({"name": "S", "subjects": ["s.>"], "storage": "memory"}))
    subject = "$JS.API.CONSUMER.CREATE.S" + (".d" if "durable_name" in config else "")
    answer = api.request(subject, json.dumps({"stream_name": "S", "config": config}))
    if "error" not in answer:
        # accepted: it must at least keep working (a publish and a pull)
        api.request("s.x", b"m")
        api.pub("$JS.API.CONSUMER.MSG.NEXT.S.d", b'{"batch":1,"no_wait":true}', "_R.pull")
        api.read_msg()
    else:
        assert answer["error"]["code"] in (400, 500), answer
    api.alive()


def test_nak_with_infinite_delay(raw_client):
    api = _api(raw_client)
    _stream(api)
    _consumer(api, durable_name="d", ack_policy="explicit")
    api.request("s.x", b"m")
    api.pub("$JS.API.CONSUMER.MSG.NEXT.S.d", b'{"batch":1}', "_R.pull")
    _s, ack, _h, data = api.read_msg()
    assert data == b"m"
    api.pub(ack, b'-NAK {"delay": Infinity}')
    api.alive()


def test_long_unicode_stream_name_gets_an_error(raw_client):
    api = _api(raw_client)
    name = "\u00e9" * 200
    answer = api.request("$JS.API.STREAM.CREATE." + name, json.dumps({"name": name, "subjects": ["u.x"]}))
    # nats-server creates it; so does FlowMQ (the directory name is escaped)
    assert "error" not in answer, answer
    api.alive()


# -- API subjects with extra tokens -------------------------------------------------


def test_stream_delete_with_an_extra_token_does_not_delete(raw_client):
    """nats-server serves $JS.API.STREAM.DELETE.* only: one more token is no
    delete request (nobody answers it), and the stream stays."""
    api = _api(raw_client)
    _stream(api)
    api.pub("$JS.API.STREAM.DELETE.S.extra", b"", "_R.del")
    info = api.request_skipping("$JS.API.STREAM.INFO.S")
    assert "error" not in info, info


def test_stream_purge_with_an_extra_token_does_not_purge(raw_client):
    api = _api(raw_client)
    _stream(api)
    api.request("s.x", b"m")
    api.pub("$JS.API.STREAM.PURGE.S.x.y", b"", "_R.purge")
    info = api.request_skipping("$JS.API.STREAM.INFO.S")
    assert info["state"]["messages"] == 1, info


# -- consumer limits on pull requests (max_batch, max_expires, max_bytes) --------------


def _pull_status(api, consumer, body):
    api.pub("$JS.API.CONSUMER.MSG.NEXT.S." + consumer, body, "_R.pull")
    _s, _r, header, data = api.read_msg()
    return header


@pytest.mark.parametrize("limit, body, status", [
    ({"max_batch": 10}, b'{"batch": 100}', b"409 Exceeded MaxRequestBatch of 10"),
    ({"max_expires": 1_000_000_000}, b'{"batch": 1, "expires": 60000000000}', b"409 Exceeded MaxRequestExpires"),
    ({"max_bytes": 1000}, b'{"batch": 1, "max_bytes": 100000}', b"409 Exceeded MaxRequestMaxBytes of 1000"),
])
def test_pull_request_beyond_the_consumer_limits_gets_409(raw_client, limit, body, status):
    api = _api(raw_client)
    _stream(api)
    _consumer(api, durable_name="d", ack_policy="explicit", **limit)
    header = _pull_status(api, "d", body)
    assert header is not None and status in header, header


# -- stream update must not widen a consumer's filter ---------------------------------


def test_stream_update_keeps_the_consumer_filter(broker):
    """A consumer filtered on 'a' of a stream on ['a'] must not get the
    messages of a subject 'b' that a stream update adds."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="U", subjects=["a"], storage="memory")
        sub = await js.pull_subscribe("a", durable="only-a", stream="U")
        await js.update_stream(name="U", subjects=["a", "b"], storage="memory")
        await js.publish("b", b"from b")
        await js.publish("a", b"from a")
        msgs = await sub.fetch(2, timeout=1)
        info = await js.consumer_info("U", "only-a")
        await nc.close()
        return [m.subject for m in msgs], info

    subjects, info = run(main())
    assert subjects == ["a"]
    assert info.num_pending == 0


# -- purge and the consumers' pending -------------------------------------------------


def test_purge_clears_ack_pending_and_unblocks_max_ack_pending(broker):
    """nats-server drops the purged messages from every consumer's pending
    (consumer.purge): num_ack_pending goes to 0 and max_ack_pending no
    longer holds back the new messages."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="P", subjects=["p"], storage="memory")
        await js.add_consumer("P", ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT,
                                                   max_ack_pending=2, ack_wait=30))
        sub = await js.pull_subscribe_bind("w", stream="P")
        for i in range(3):
            await js.publish("p", b"%d" % i)
        first = await sub.fetch(2, timeout=1)
        await js.purge_stream("P")
        info = await js.consumer_info("P", "w")
        await js.publish("p", b"after")
        try:
            later = await sub.fetch(1, timeout=1)
        except nats.errors.TimeoutError:
            later = []  # held back by max_ack_pending: the purged messages still count
        await nc.close()
        return first, info, later

    first, info, later = run(main())
    assert len(first) == 2
    assert info.num_ack_pending == 0
    assert info.ack_floor.stream_seq == 3
    assert [m.data for m in later] == [b"after"]


# -- ephemeral pull consumers are deleted when their client is gone ------------------


def test_ephemeral_pull_consumer_goes_when_its_waiting_request_has_no_interest(broker, raw_client):
    api = _api(raw_client)
    _stream(api)
    other = raw_client()
    other.handshake()
    other.subscribe(b"_GONE.inbox", b"1")
    answer = _consumer(api, ack_policy="explicit", inactive_threshold=300_000_000)
    name = answer["name"]
    # a pull request that never expires, from a client that then goes away
    other.send(b"PUB $JS.API.CONSUMER.MSG.NEXT.S.%s _GONE.inbox 12\r\n{\"batch\": 1}\r\nPING\r\n" % name.encode())
    assert other.read_line() == b"PONG"
    other.close()
    deadline = time.monotonic() + 4  # under the 5 s default threshold, so the 0.3 s given is what counts
    info = api.request("$JS.API.CONSUMER.INFO.S." + name)
    while "error" not in info and time.monotonic() < deadline:  # INFO requests are no activity
        time.sleep(0.05)
        info = api.request("$JS.API.CONSUMER.INFO.S." + name)
    assert info.get("error", {}).get("code") == 404, info


# -- memory: the redelivery heap does not keep what was acknowledged -------------------


def _consumer_object(broker, stream, name):
    return broker.service.jetstream.streams[stream].consumers[name]


def test_acknowledged_deliveries_leave_no_deadline_entries(broker):
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="H", subjects=["h"], storage="memory")
        await js.add_consumer("H", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=3600))
        sub = await js.pull_subscribe_bind("c", stream="H")
        for i in range(2000):
            await js.publish("h", b"x")
        done = 0
        while done < 2000:
            for msg in await sub.fetch(500, timeout=2):
                await msg.ack()
                done += 1
        await flushed(nc)
        info = await js.consumer_info("H", "c")
        await nc.close()
        return info

    info = run(main())
    assert info.num_ack_pending == 0
    deadlines = broker.call(lambda: _consumer_object(broker, "H", "c").acks.scheduled())
    assert deadlines < 100, "%d deadline entries kept for 0 pending messages" % deadlines


def test_progress_acks_do_not_grow_memory(raw_client, broker):
    api = _api(raw_client)
    _stream(api)
    _consumer(api, durable_name="d", ack_policy="explicit", ack_wait=3600 * 10**9)
    api.request("s.x", b"m")
    api.pub("$JS.API.CONSUMER.MSG.NEXT.S.d", b'{"batch":1}', "_R.pull")
    _s, ack, _h, data = api.read_msg()
    api.client.send(b"".join(b"PUB %s 4\r\n+WPI\r\n" % ack for _ in range(20000)))
    api.ping()
    deadlines = broker.call(lambda: _consumer_object(broker, "S", "d").acks.scheduled())
    assert deadlines < 100, "%d deadline entries for 1 pending message" % deadlines


# -- more nats-server rules ----------------------------------------------------------------


def test_push_consumer_heartbeat_below_100ms_is_refused(raw_client):
    """nats-server: JSConsumerSmallHeartbeatError (a 1 ns heartbeat would be a
    timer that fires every reactor turn)."""
    api = _api(raw_client)
    _stream(api)
    answer = api.request("$JS.API.CONSUMER.CREATE.S", json.dumps(
        {"stream_name": "S", "config": {"deliver_subject": "hb.x", "idle_heartbeat": 1}}))
    assert answer.get("error", {}).get("code") == 400, answer


def test_expected_last_msg_id_after_a_message_without_id(raw_client):
    """nats-server sets the stream's last msg id on every stored message, to
    "" when it has no Nats-Msg-Id."""
    api = _api(raw_client)
    _stream(api)
    assert "error" not in api.request("s.x", b"1", headers=[("Nats-Msg-Id", "a")])
    assert "error" not in api.request("s.x", b"2")
    answer = api.request("s.x", b"3", headers=[("Nats-Expected-Last-Msg-Id", "a")])
    assert answer.get("error", {}).get("err_code") == 10070, answer


def test_interest_stream_drops_messages_when_the_only_consumer_is_deleted(raw_client):
    api = _api(raw_client)
    _stream(api, retention="interest")
    _consumer(api, durable_name="d", ack_policy="explicit")
    for i in range(3):
        api.request("s.x", b"m")
    assert api.request("$JS.API.STREAM.INFO.S")["state"]["messages"] == 3
    assert api.request("$JS.API.CONSUMER.DELETE.S.d").get("success")
    info = api.request("$JS.API.STREAM.INFO.S")
    assert info["state"]["messages"] == 0, info["state"]


def test_filtered_consumer_delivery_is_not_quadratic_in_subjects(broker):
    """Each delivery computes num_pending for its ack subject; with a wildcard
    filter over many subjects that must not be a scan of every subject."""
    count = 8000

    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="K", subjects=["k.>"], storage="memory")
        for i in range(count):
            await nc.publish("k.%d" % i, b"v")
        await flushed(nc)
        sub = await js.pull_subscribe("k.*", durable="all-keys", stream="K",
                                     config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        started = time.monotonic()
        got = 0
        while got < count:
            got += len(await sub.fetch(1000, timeout=60))
        elapsed = time.monotonic() - started
        await nc.close()
        return elapsed

    elapsed = run(main(), timeout=120)
    assert elapsed < 3.0, "%.1f s to fetch %d messages" % (elapsed, count)


# -- names that fit nats-server's 255 characters on a file stream -------------------------


def test_durable_consumer_with_a_long_name_survives_a_restart(start_broker):
    """check_name allows 255 characters, but the consumer's meta file is
    "consumer.<name>.json": the state of a 250-character durable can not be
    saved, and other consumers saved in the same batch are lost too."""
    long_name = "c" * 250

    async def first(broker):
        nc, js = await _connect(broker)
        await js.add_stream(name="F", subjects=["f"])
        await js.add_consumer("F", ConsumerConfig(durable_name=long_name, ack_policy=AckPolicy.EXPLICIT))
        await js.add_consumer("F", ConsumerConfig(durable_name="normal", ack_policy=AckPolicy.EXPLICIT))
        await js.publish("f", b"1")
        sub = await js.pull_subscribe_bind("normal", stream="F")
        for msg in await sub.fetch(1, timeout=1):
            await msg.ack_sync()
        await asyncio.sleep(0.3)
        await nc.close()

    async def second(broker):
        nc, js = await _connect(broker)
        names = await js.consumers_info("F")
        normal = await js.consumer_info("F", "normal")
        await nc.close()
        return sorted(c.name for c in names), normal

    broker = start_broker()
    run(first(broker))
    broker.stop()
    broker = start_broker()
    names, normal = run(second(broker))
    assert names == sorted([long_name, "normal"])
    assert normal.ack_floor.stream_seq == 1


def test_stream_with_a_long_escaped_name(raw_client):
    """255 printable characters are a valid name; escaped for the file system
    they may be 3 to 12 times longer than 255 bytes."""
    api = _api(raw_client)
    name = "a-%" * 85
    answer = api.request("$JS.API.STREAM.CREATE." + name, json.dumps({"name": name, "subjects": ["long.x"]}))
    assert "error" not in answer or answer["error"]["code"] == 400, answer
    api.alive()


def test_work_queue_keeps_a_message_that_ran_out_of_deliveries(raw_client):
    """nats-server (hasMaxDeliveries) takes a message that reached max_deliver
    out of the consumer's pending without acknowledging it: a work-queue
    stream keeps it (it is not lost unprocessed)."""
    api = _api(raw_client)
    _stream(api, retention="workqueue")
    _consumer(api, durable_name="w", ack_policy="explicit", max_deliver=1, ack_wait=200_000_000)
    api.request("s.x", b"job")
    api.pub("$JS.API.CONSUMER.MSG.NEXT.S.w", b'{"batch":1}', "_R.pull")
    _s, _ack, _h, data = api.read_msg()
    assert data == b"job"
    time.sleep(1.0)
    info = api.request("$JS.API.STREAM.INFO.S")
    assert info["state"]["messages"] == 1, info["state"]
