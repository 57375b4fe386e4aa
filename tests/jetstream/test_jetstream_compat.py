"""JetStream behaviour that clients notice, compared with nats-server's.

Each test states what nats-server (2.10 .. 2.15, run with ``-js``) answers
for the same requests, and checks FlowMQ answers alike: redelivery timing
of -NAK with a delay, pull requests that expire, direct gets nobody serves,
rollups and purges by wildcard, configuration checks, the JSON of stream
answers and the byte counts of stored messages.
"""

from __future__ import annotations

import json

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import ConsumerConfig

from tests.conftest import run
from tests.jetstream.test_jetstream_edge_cases import Api, _stream


async def _connect(broker):
    nc = await nats.connect(broker.url)
    return nc, nc.jetstream()


async def _api(nc, subject, body=b""):
    """A JetStream API request; the decoded JSON answer."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    msg = await nc.request(subject, body, timeout=10)
    return json.loads(msg.data)


# -- redelivery and pull requests -----------------------------------------------------


def test_nak_with_delay_redelivers_after_the_delay_not_the_ack_wait(broker):
    """nats-server redelivers a -NAK {"delay": ns} when the delay has passed,
    however long ack_wait is (here 30 s)."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="NAKD", subjects=["nakd"])
        await js.publish("nakd", b"x")
        sub = await js.pull_subscribe("nakd", durable="d", config=ConsumerConfig(ack_wait=30))
        [first] = await sub.fetch(1, timeout=5)
        await first.nak(delay=0.5)
        [again] = await sub.fetch(1, timeout=10)
        await nc.close()
        return again

    again = run(main())
    assert (again.data, again.metadata.num_delivered) == (b"x", 2)


def test_a_pull_request_that_ran_out_gets_no_message_published_after(raw_client):
    """nats-server checks a pull request's expiry as it delivers: a message
    that comes after it (even before the request's timer fires) is not sent
    to it; the request ends with 408 and the message waits for the next."""
    api = Api(raw_client())
    _stream(api, "EXP", ["exp"])
    answer = api.request("$JS.API.CONSUMER.CREATE.EXP.c", json.dumps(
        {"stream_name": "EXP", "config": {"durable_name": "c", "ack_policy": "explicit"}}))
    assert "error" not in answer, answer
    api.client.subscribe(b"pull.inbox", b"7")
    # One write: the request's microsecond has run out when the publish after
    # it is read, in the same turn of the reactor, before any timer can fire.
    request = b'{"batch":1,"expires":1000}'
    api.client.send(b"PUB $JS.API.CONSUMER.MSG.NEXT.EXP.c pull.inbox %d\r\n%s\r\nPUB exp 5\r\nhello\r\n"
                    % (len(request), request))
    subject, _reply, header, payload = api.read_msg()
    assert (subject, payload) == (b"pull.inbox", b"")
    assert header.startswith(b"NATS/1.0 408 Request Timeout\r\n")
    api.pub("$JS.API.CONSUMER.MSG.NEXT.EXP.c", b'{"batch":1,"no_wait":true}', "pull.inbox")
    subject, reply, header, payload = api.read_msg()
    assert (subject, header, payload) == (b"exp", None, b"hello")
    assert reply.startswith(b"$JS.ACK.EXP.c.1.1.")


# -- direct gets and message lookups --------------------------------------------------


def test_requests_nats_server_has_no_subscription_for_get_no_responders(broker):
    """nats-server listens on DIRECT.GET.<stream> only for streams with
    allow_direct, and on MSG.NEXT.<stream>.<consumer> only while the consumer
    exists: elsewhere a request finds no responders (nats-py raises
    NoRespondersError), not a 404 or 409 status."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="PLAIN", subjects=["plain"])
        await js.publish("plain", b"x")
        refused = []
        for subject, body in (("$JS.API.DIRECT.GET.PLAIN", b'{"seq":1}'),
                              ("$JS.API.DIRECT.GET.MISSING", b'{"seq":1}'),
                              ("$JS.API.DIRECT.GET.PLAIN.plain", b""),
                              ("$JS.API.CONSUMER.MSG.NEXT.PLAIN.missing", b'{"batch":1}'),
                              ("$JS.API.CONSUMER.MSG.NEXT.MISSING.c", b'{"batch":1}')):
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request(subject, body, timeout=10)
            refused.append(subject)
        await nc.close()
        return refused

    assert len(run(main())) == 5


def test_direct_get_statuses_are_nats_servers(broker):
    """The 408/404 statuses of DIRECT.GET and their descriptions, as
    nats-server's processDirectGetRequest sends them."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="DG", subjects=["dg.>"], allow_direct=True)
        await js.publish("dg.a.b", b"x")
        statuses = []
        for subject, body in (("$JS.API.DIRECT.GET.DG", b""),
                              ("$JS.API.DIRECT.GET.DG", b"{}"),
                              ("$JS.API.DIRECT.GET.DG", b"not json"),
                              ("$JS.API.DIRECT.GET.DG", b'{"seq":1,"last_by_subj":"dg.a.b"}'),
                              ("$JS.API.DIRECT.GET.DG.dg.a.b", b'{"seq":1}'),
                              ("$JS.API.DIRECT.GET.DG", b'{"seq":2}'),
                              ("$JS.API.DIRECT.GET.DG", b'{"last_by_subj":"dg..b"}')):
            msg = await nc.request(subject, body, timeout=10)
            statuses.append((msg.headers.get("Status"), msg.headers.get("Description")))
        found = await nc.request("$JS.API.DIRECT.GET.DG.dg.*.b", b"", timeout=10)
        await nc.close()
        return statuses, found

    statuses, found = run(main())
    assert statuses == [("408", "Empty Request"), ("408", "Empty Request"), ("408", "Malformed Request"),
                        ("408", "Bad Request"), ("408", "Bad Request"), ("404", "Message Not Found"),
                        ("404", "Message Not Found")]
    assert (found.data, found.headers["Nats-Sequence"], found.headers["Nats-Subject"]) == (b"x", "1", "dg.a.b")


def test_a_lookup_by_a_subject_with_an_empty_token_finds_no_message(broker):
    """STREAM.MSG.GET with last_by_subj / next_by_subj "lk..b" (an empty token):
    nats-server answers 404 no message found (10037), not 400 bad request."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="LK", subjects=["lk.>"])
        await js.publish("lk.a.b", b"x")
        answers = [await _api(nc, "$JS.API.STREAM.MSG.GET.LK", body)
                   for body in ({"last_by_subj": "lk..b"}, {"next_by_subj": "lk..b"}, {"last_by_subj": "lk. .b"})]
        with pytest.raises(nats.js.errors.NotFoundError) as missing:
            await js.get_last_msg("LK", "lk..b")
        found = await js.get_last_msg("LK", "lk.*.b")
        await nc.close()
        return answers, missing.value, found

    answers, missing, found = run(main())
    assert [a["error"] for a in answers] == [{"code": 404, "err_code": 10037, "description": "no message found"}] * 3
    assert missing.err_code == 10037
    assert (found.seq, found.data) == (1, b"x")


# -- configuration checks -------------------------------------------------------------


def test_consumer_flow_control_and_heartbeat_checks_are_nats_servers(broker):
    """nats-server refuses flow control without idle heartbeats (10108), and
    idle heartbeats (10088) or flow control (10089) on a pull consumer."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="FC", subjects=["fc"])
        errors = []
        for config in ({"deliver_subject": "fc.out", "flow_control": True},
                       {"idle_heartbeat": 1_000_000_000},
                       {"flow_control": True},
                       {"flow_control": True, "idle_heartbeat": 1_000_000_000}):
            answer = await _api(nc, "$JS.API.CONSUMER.CREATE.FC", {"stream_name": "FC", "config": config})
            errors.append((answer["error"]["code"], answer["error"]["err_code"]))
        ok = await _api(nc, "$JS.API.CONSUMER.CREATE.FC", {"stream_name": "FC", "config": {
            "deliver_subject": "fc.out", "flow_control": True, "idle_heartbeat": 1_000_000_000}})
        await nc.close()
        return errors, ok

    errors, ok = run(main())
    assert errors == [(400, 10108), (400, 10088), (400, 10089), (400, 10088)]
    assert ok["config"]["flow_control"] is True


def test_consumer_defaults_from_backoff_and_the_streams_consumer_limits(broker):
    """nats-server: the first backoff is the ack wait; the stream's
    consumer_limits are the consumers' defaults and their limits (10121,
    10153, the limit in Go's duration format)."""
    async def main():
        nc, js = await _connect(broker)
        await _api(nc, "$JS.API.STREAM.CREATE.CL", {"name": "CL", "subjects": ["cl"], "consumer_limits": {
            "inactive_threshold": 90_000_000_000, "max_ack_pending": 10}})
        answers = []
        for config in ({"durable_name": "bo", "ack_policy": "explicit", "backoff": [1_000_000_000, 2_000_000_000],
                        "max_deliver": 5},
                       {"durable_name": "more", "ack_policy": "explicit", "max_ack_pending": 11},
                       {"durable_name": "longer", "ack_policy": "explicit", "inactive_threshold": 91_000_000_000}):
            answers.append(await _api(nc, "$JS.API.CONSUMER.CREATE.CL." + config["durable_name"],
                                      {"stream_name": "CL", "config": config}))
        await nc.close()
        return answers

    backoff, more, longer = run(main())
    config = backoff["config"]
    assert (config["ack_wait"], config["max_ack_pending"], config["inactive_threshold"]) == (
        1_000_000_000, 10, 90_000_000_000)
    assert more["error"] == {"code": 400, "err_code": 10121,
                             "description": "consumer max ack pending exceeds system limit of 10"}
    assert longer["error"] == {"code": 400, "err_code": 10153,
                               "description": "consumer inactive threshold exceeds system limit of 1m30s"}


def test_mirror_direct_without_a_mirror_is_refused(broker):
    """nats-server: "stream has no mirror but does have mirror direct" (500, 10052)."""
    async def main():
        nc, _js = await _connect(broker)
        answer = await _api(nc, "$JS.API.STREAM.CREATE.MD", {"name": "MD", "subjects": ["md"], "mirror_direct": True})
        names = await _api(nc, "$JS.API.STREAM.NAMES")
        await nc.close()
        return answer, names

    answer, names = run(main())
    assert answer["error"] == {"code": 500, "err_code": 10052,
                               "description": "stream has no mirror but does have mirror direct"}
    assert not names["streams"]


# -- rollups and purges -----------------------------------------------------------------


def test_a_rollup_on_a_subject_with_wildcards_purges_every_matching_subject(broker):
    """nats-server stores a message published on "ru.*" (it does not check
    publish subjects) and its "Nats-Rollup: sub" purges the subject as a
    filter: every ru.<token> message goes, ru.c.d stays. The header's value
    is taken in any case; an empty one is no rollup."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="RU", subjects=["ru.>"], allow_rollup_hdrs=True)
        for subject in ("ru.a", "ru.b", "ru.c.d", "ru.a"):
            await js.publish(subject, b"x")
        rollup = await js.publish("ru.*", b"R", headers={"Nats-Rollup": "sub"})
        after_sub = await js.stream_info("RU")
        kept = await js.get_msg("RU", 3)
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_msg("RU", 4)
        await js.publish("ru.e.f", b"x", headers={"Nats-Rollup": ""})
        await js.publish("ru.g.h", b"R", headers={"Nats-Rollup": "SUB"})
        everything = await js.publish("ru.>", b"R", headers={"Nats-Rollup": "Sub"})
        after_all = await js.stream_info("RU")
        await nc.close()
        return rollup, after_sub, kept, everything, after_all

    rollup, after_sub, kept, everything, after_all = run(main())
    assert rollup.seq == 5
    assert (after_sub.state.messages, after_sub.state.first_seq) == (2, 3)
    assert (kept.subject, kept.seq) == ("ru.c.d", 3)
    assert (after_all.state.messages, after_all.state.first_seq) == (1, everything.seq)


def test_a_key_value_purge_of_a_wildcard_key_purges_the_matching_keys(broker):
    """KV purge is a "sub" rollup on $KV.<bucket>.<key>: with nats-server a
    wildcard key purges every key it matches."""
    async def main():
        nc, js = await _connect(broker)
        kv = await js.create_key_value(bucket="KVW")
        for key, value in (("hello.a", b"1"), ("hello.b", b"2"), ("other", b"3")):
            await kv.put(key, value)
        await kv.purge("hello.*")
        gone = []
        for key in ("hello.a", "hello.b"):
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get(key)
            gone.append(key)
        other = await kv.get("other")
        status = await kv.status()
        await nc.close()
        return gone, other, status

    gone, other, status = run(main())
    assert gone == ["hello.a", "hello.b"] and other.value == b"3"
    assert status.values == 2  # "other" and the purge marker


def test_purge_by_a_wildcard_filter_purges_every_matching_subject(broker):
    """STREAM.PURGE {"filter": "pw.*"} (and with keep) purges every subject
    the filter matches, as nats-server's PurgeEx does."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="PW", subjects=["pw.>"])
        for subject in ("pw.a", "pw.b", "pw.c.d", "pw.a", "pw.b"):
            await js.publish(subject, b"x")
        kept_one = await _api(nc, "$JS.API.STREAM.PURGE.PW", {"filter": "pw.*", "keep": 1})
        first = await js.stream_info("PW", subjects_filter=">")
        purged = await _api(nc, "$JS.API.STREAM.PURGE.PW", {"filter": "pw.*"})
        second = await js.stream_info("PW", subjects_filter=">")
        await nc.close()
        return kept_one, first, purged, second

    kept_one, first, purged, second = run(main())
    assert (kept_one["purged"], first.state.subjects) == (3, {"pw.b": 1, "pw.c.d": 1})
    assert (purged["purged"], second.state.subjects) == (1, {"pw.c.d": 1})


# -- the JSON of the answers -----------------------------------------------------------


def test_stream_answers_have_nats_servers_fields(broker):
    """nats-server (not clustered): only STREAM.INFO tells the cluster;
    did_create is in every successful STREAM.CREATE answer; num_deleted,
    num_subjects, subjects, no_ack and discard_new_per_subject are left out
    when zero, empty or false; STREAM.INFO pages the subjects (total, offset,
    limit, all zero when none match)."""
    async def main():
        nc, _js = await _connect(broker)
        request = {"name": "JS1", "subjects": ["js1.>"]}
        created = await _api(nc, "$JS.API.STREAM.CREATE.JS1", request)
        again = await _api(nc, "$JS.API.STREAM.CREATE.JS1", request)
        updated = await _api(nc, "$JS.API.STREAM.UPDATE.JS1", dict(request, max_msgs=10))
        listed = await _api(nc, "$JS.API.STREAM.LIST")
        info = await _api(nc, "$JS.API.STREAM.INFO.JS1", {"subjects_filter": "js1.>"})
        for subject in ("js1.c", "js1.a", "js1.b"):
            await nc.request(subject, b"x", timeout=10)
        details = await _api(nc, "$JS.API.STREAM.INFO.JS1", {"subjects_filter": "js1.>"})
        page = await _api(nc, "$JS.API.STREAM.INFO.JS1", {"subjects_filter": "js1.>", "offset": 1})
        await nc.close()
        return created, again, updated, listed, info, details, page

    created, again, updated, listed, info, details, page = run(main())
    for answer in (created, again, updated, listed["streams"][0]):
        assert "cluster" not in answer
        assert not {"num_deleted", "num_subjects", "subjects"} & set(answer["state"])
        assert not {"no_ack", "discard_new_per_subject"} & set(answer["config"])
    assert created["did_create"] is True and again["did_create"] is True
    assert info["cluster"]["leader"]
    assert "subjects" not in info["state"]
    assert (info["total"], info["offset"], info["limit"]) == (0, 0, 0)
    assert details["state"]["subjects"] == {"js1.a": 1, "js1.b": 1, "js1.c": 1}
    assert (details["total"], details["offset"], details["limit"]) == (3, 0, 100_000)
    assert details["state"]["num_subjects"] == 3
    assert list(page["state"]["subjects"]) == ["js1.b", "js1.c"]
    assert (page["total"], page["offset"]) == (3, 1)


def test_consumer_answers_have_nats_servers_fields(broker):
    """nats-server (not clustered): consumer answers tell no cluster, and
    delivered / ack_floor have last_active only once something was
    delivered / acknowledged."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="JS2", subjects=["js2"])
        await js.publish("js2", b"x")
        created = await _api(nc, "$JS.API.CONSUMER.CREATE.JS2.d", {
            "stream_name": "JS2", "config": {"durable_name": "d", "ack_policy": "explicit"}})
        sub = await js.pull_subscribe_bind("d", stream="JS2")
        [msg] = await sub.fetch(1, timeout=10)
        delivered = await _api(nc, "$JS.API.CONSUMER.INFO.JS2.d")
        await msg.ack_sync(timeout=10)
        acked = await _api(nc, "$JS.API.CONSUMER.INFO.JS2.d")
        listed = await _api(nc, "$JS.API.CONSUMER.LIST.JS2")
        await nc.close()
        return created, delivered, acked, listed

    created, delivered, acked, listed = run(main())
    for answer in (created, delivered, acked, listed["consumers"][0]):
        assert "cluster" not in answer
    assert "last_active" not in created["delivered"] and "last_active" not in created["ack_floor"]
    assert "last_active" in delivered["delivered"] and "last_active" not in delivered["ack_floor"]
    assert "last_active" in acked["ack_floor"]


# -- bytes ---------------------------------------------------------------------------------


def _memory_bytes(subject: str, header_block: bytes, payload: bytes) -> int:
    """nats-server's memStoreMsgSize."""
    return len(subject.encode()) + len(header_block) + len(payload) + 16


def _file_bytes(subject: str, header_block: bytes, payload: bytes) -> int:
    """nats-server's fileStoreMsgSize."""
    size = 22 + len(subject.encode()) + len(payload) + 8
    return size + 4 + len(header_block) if header_block else size


#: (subject after the stream's prefix, headers, payload): plain, empty, with
#: headers (the NATS block nats-py sends), a multi-byte subject, a subject
#: with a character FlowMQ escapes in its topics.
_SAMPLES = (
    ("a", None, b"hello"),
    ("a", None, b""),
    ("b", {"Nats-Msg-Id": "abc"}, b"hello"),
    ("c", {"X-One": "1", "X-Two": "two"}, b"payload" * 10),
    ("\u00e9t\u00e9", None, b"x"),
    ("a/b", None, b"x"),
)


def _block(headers) -> bytes:
    if not headers:
        return b""
    return b"NATS/1.0\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items()) + b"\r\n"


def test_stream_bytes_count_as_nats_servers_file_and_memory_and_after_a_restart(start_broker):
    """state.bytes is nats-server's figure byte for byte: memory streams
    count subject + header block + payload + 16, file streams their record
    (22 + subject + payload + 8, and 4 + header block with headers). A
    restart recounts the same (sealed segments from their index, the
    active one by reading it)."""
    broker = start_broker(**{"storage.segment_bytes": 256})

    async def publish_all():
        nc, js = await _connect(broker)
        for storage in ("file", "memory"):
            name = "BY" + storage[0].upper()
            await js.add_stream(name=name, subjects=[name.lower() + ".>"], storage=storage)
            for suffix, headers, payload in _SAMPLES:
                await js.publish("%s.%s" % (name.lower(), suffix), payload, headers=headers)
        counted = {name: (await js.stream_info(name)).state.bytes for name in ("BYF", "BYM")}
        await nc.close()
        return counted

    async def file_bytes():
        nc, js = await _connect(broker)
        info = await js.stream_info("BYF")
        await nc.close()
        return info.state.bytes

    counted = run(publish_all())
    expected = {name: sum(size("%s.%s" % (name.lower(), suffix), _block(headers), payload)
                          for suffix, headers, payload in _SAMPLES)
                for name, size in (("BYF", _file_bytes), ("BYM", _memory_bytes))}
    assert counted == expected
    broker.stop()
    broker = start_broker(**{"storage.segment_bytes": 256})
    assert run(file_bytes()) == expected["BYF"]


def test_max_bytes_and_max_msg_size_count_as_nats_server(broker):
    """max_bytes limits what state.bytes counts (discard old drops the oldest,
    discard new refuses), and max_msg_size counts the header block as sent
    (nats-server: len(hdr) + len(msg))."""
    async def main():
        nc, js = await _connect(broker)
        await js.add_stream(name="MBO", subjects=["mbo"], max_bytes=100)  # file: 30 bytes -> 64
        for headers, payload in ((None, b"x" * 30), (None, b"x" * 30), ({"A": "b"}, b"x" * 5)):
            await js.publish("mbo", payload, headers=headers)
        old = await js.stream_info("MBO")
        await js.add_stream(name="MBN", subjects=["mbn"], max_bytes=100, discard="new", storage="memory")
        await js.publish("mbn", b"x" * 30)  # 3 + 30 + 16 = 49
        await js.publish("mbn", b"x" * 30)
        refused = []
        for headers, payload in (({"A": "b"}, b"x" * 5), (None, b"x")):
            with pytest.raises(nats.js.errors.APIError) as full:
                await js.publish("mbn", payload, headers=headers)
            refused.append(full.value.description)
        new = await js.stream_info("MBN")
        await js.add_stream(name="MS", subjects=["ms"], max_msg_size=20)
        accepted = [await js.publish("ms", b"x" * 20), await js.publish("ms", b"x", headers={"A": "b"})]
        too_big = []
        for headers, payload in ((None, b"x" * 21), ({"Abc": "b"}, b"x" * 5), ({"Abc": "b"}, b"x" * 4)):
            with pytest.raises(nats.js.errors.BadRequestError) as error:
                await js.publish("ms", payload, headers=headers)
            too_big.append(error.value.err_code)
        await nc.close()
        return old, refused, new, accepted, too_big

    old, refused, new, accepted, too_big = run(main())
    assert (old.state.messages, old.state.first_seq, old.state.bytes) == (1, 3, 22 + 3 + 5 + 8 + 4 + 18)
    assert refused == ["maximum bytes exceeded"] * 2
    assert (new.state.messages, new.state.bytes) == (2, 98)
    assert [ack.seq for ack in accepted] == [1, 2]  # 20, and 18 (header block) + 1
    assert too_big == [10054] * 3  # 21; 20 + 5; 20 + 4


def test_a_pull_requests_max_bytes_counts_as_nats_server(raw_client):
    """nats-server counts a delivery against max_bytes as subject + ack reply
    subject + header block + payload; the message that does not fit ends the
    request with 409 and what was left of it (Nats-Pending-Messages/-Bytes)."""
    api = Api(raw_client())
    _stream(api, "PMB", ["pmb"])
    answer = api.request("$JS.API.CONSUMER.CREATE.PMB.c", json.dumps(
        {"stream_name": "PMB", "config": {"durable_name": "c", "ack_policy": "none"}}))
    assert "error" not in answer, answer
    for _ in range(3):
        api.pub("pmb", b"x" * 100, headers=[("H", "v")])
    api.ping()
    api.client.subscribe(b"pull.bytes", b"8")
    # Each delivery: 3 (pmb) + 41 ($JS.ACK.PMB.c.1.<seq>.<seq>.<19-digit ns>.<pending>)
    # + 18 (NATS/1.0, H: v) + 100 = 162: one fits in 300, two do not.
    api.pub("$JS.API.CONSUMER.MSG.NEXT.PMB.c", b'{"batch":3,"max_bytes":300}', "pull.bytes")
    first = api.read_msg()
    subject, reply, header, payload = first
    assert (subject, payload) == (b"pmb", b"x" * 100)
    assert len(subject) + len(reply) + len(header) + len(payload) == 162
    status = api.read_msg()
    assert status[0] == b"pull.bytes"
    assert status[2] == (b"NATS/1.0 409 Message Size Exceeds MaxBytes\r\n"
                         b"Nats-Pending-Messages: 2\r\nNats-Pending-Bytes: 138\r\n\r\n")
