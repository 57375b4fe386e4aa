"""Runs of PUBs: PUBs in a row with the same control line, which the parser
hands out as one operation and the broker delivers as one run
(``Broker.publish_run``). Every rule that holds for one PUB holds for each
PUB of a run: order per subscription, UNSUB limits (a queue member at its
limit leaves the rest to the others), echo, verbose +OK, no responders,
streams.

The wire scripts (tests/wire.py) hand each ``send`` to the protocol as one
read, so a run is exactly the PUBs of one send.
"""

from __future__ import annotations

import asyncio
import re

import nats
import pytest

from tests.conftest import RawClient, flushed, run

CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
COUNT = 20
MSG = re.compile(rb"MSG (\S+) (\S+) (?:(\S+) )?(\d+)\r\n")


def _connected(broker, connect=CONNECT):
    client = broker.connect("nats")
    client.take()
    client.send(connect)
    return client


def _run(count: int = COUNT, size: int = 4, subject: bytes = b"orders.new", reply: bytes = b"") -> bytes:
    """``count`` PUBs with one control line: payloads of ``size`` bytes, numbered."""
    line = b"PUB %s %s%d\r\n" % (subject, reply + b" " if reply else b"", size)
    return b"".join(line + (b"%d" % n).zfill(size) + b"\r\n" for n in range(count))


def _numbers(size: int = 4, count: int = COUNT) -> list:
    return [(b"%d" % n).zfill(size) for n in range(count)]


def _messages(data: bytes) -> dict:
    """The payloads of the MSG frames in ``data``, in order, by sid; the
    frames must fill ``data`` exactly."""
    by_sid: dict = {}
    pos = 0
    while pos < len(data):
        match = MSG.match(data, pos)
        assert match, data[pos:pos + 80]
        start = match.end()
        size = int(match.group(4))
        assert data[start + size:start + size + 2] == b"\r\n"
        by_sid.setdefault(match.group(2), []).append(data[start:start + size])
        pos = start + size + 2
    return by_sid


@pytest.mark.parametrize("size", [4, 1024, 8191, 8192, 70000], ids=["4B", "1KB", "8KB-1", "8KB", "70KB"])
def test_a_run_reaches_every_subscription_whole_and_in_order(wire, size):
    broker = wire(**{"nats.max_payload": 1 << 20})
    first, second, publisher = _connected(broker), _connected(broker), _connected(broker)
    first.send(b"SUB orders.new 1\r\nSUB orders.* 2\r\n")  # two subscriptions of one connection
    second.send(b"SUB orders.> 7\r\n")
    publisher.send(_run(size=size))
    expected = _numbers(size)
    assert _messages(first.take()) == {b"1": expected, b"2": expected}
    assert _messages(second.take()) == {b"7": expected}
    assert publisher.take() == b""


@pytest.mark.parametrize("size", [4, 1024], ids=["4B", "1KB"])
def test_a_run_with_a_reply_subject_reaches_a_subscriber_as_the_same_frames_one_by_one_would(wire, size):
    broker = wire()
    subscriber = _connected(broker)
    publisher = _connected(broker, b'CONNECT {"verbose":false,"pedantic":false}\r\n')
    subscriber.send(b"SUB orders.new 7\r\n")
    publisher.send(_run(size=size, reply=b"inbox.1"))
    assert subscriber.take() == b"".join(
        b"MSG orders.new 7 inbox.1 %d\r\n%s\r\n" % (size, payload) for payload in _numbers(size))


@pytest.mark.parametrize("size", [4, 1024], ids=["4B", "1KB"])
def test_a_fan_out_of_a_run_gives_each_subscriber_its_own_sid_and_a_queue_member_its_share_only(wire, size):
    """Subscribers with the same MSG line share one framing of a run: each
    gets exactly the frames one-by-one delivery makes, one with another
    sid its own, and queue members (a share of the run each, after a plain
    subscriber with the same line) only their share."""
    broker = wire()
    alike = [_connected(broker) for _ in range(3)]
    other = _connected(broker)
    members = [_connected(broker) for _ in range(2)]
    for subscriber in alike:
        subscriber.send(b"SUB orders.new 1\r\n")
    other.send(b"SUB orders.new 9\r\n")
    for member in members:
        member.send(b"SUB orders.new workers 1\r\n")
    publisher = _connected(broker, b'CONNECT {"verbose":false,"pedantic":false}\r\n')
    publisher.send(_run(size=size, reply=b"inbox.1"))
    frames = [b"MSG orders.new %%s inbox.1 %d\r\n%s\r\n" % (size, payload) for payload in _numbers(size)]
    for subscriber in alike:
        assert subscriber.take() == b"".join(frame % b"1" for frame in frames)
    assert other.take() == b"".join(frame % b"9" for frame in frames)
    shares = [_messages(member.take()).get(b"1", []) for member in members]
    assert sorted(shares[0] + shares[1]) == _numbers(size)
    assert all(share == sorted(share) for share in shares)


def test_a_run_of_empty_payloads_reaches_a_subscriber_frame_by_frame(wire):
    broker = wire()
    subscriber, publisher = _connected(broker), _connected(broker)
    subscriber.send(b"SUB orders.new 7\r\n")
    publisher.send(b"PUB orders.new 0\r\n\r\n" * 3)
    assert subscriber.take() == b"MSG orders.new 7 0\r\n\r\n" * 3


def test_an_unsub_limit_ends_a_subscription_inside_a_run(wire):
    broker = wire()
    subscriber, publisher = _connected(broker), _connected(broker)
    subscriber.send(b"SUB orders.new 1\r\nUNSUB 1 3\r\nSUB orders.new 2\r\n")
    publisher.send(_run())
    assert _messages(subscriber.take()) == {b"1": _numbers()[:3], b"2": _numbers()}
    publisher.send(_run())
    assert _messages(subscriber.take()) == {b"2": _numbers()}


def test_a_queue_member_at_its_limit_leaves_the_rest_of_a_run_to_the_others(wire):
    broker = wire()
    limited, others = _connected(broker), [_connected(broker) for _ in range(2)]
    limited.send(b"SUB orders.new workers 1\r\nUNSUB 1 2\r\n")
    for other in others:
        other.send(b"SUB orders.new workers 1\r\n")
    publisher = _connected(broker)
    publisher.send(_run())
    taken = _messages(limited.take()).get(b"1", [])
    rest = [_messages(other.take()).get(b"1", []) for other in others]
    assert len(taken) == 2
    assert sorted(taken + rest[0] + rest[1]) == _numbers()  # each message once
    for share in [taken] + rest:
        assert share == sorted(share)  # and each member's share in order
    publisher.send(_run())
    assert limited.take() == b""  # it left the group
    assert sorted(sum((_messages(other.take()).get(b"1", []) for other in others), [])) == _numbers()


def test_echo_off_keeps_a_run_from_its_own_publisher(wire):
    broker = wire()
    quiet = _connected(broker, b'CONNECT {"verbose":false,"pedantic":false,"echo":false}\r\n')
    listener = _connected(broker)
    quiet.send(b"SUB orders.new 1\r\n")
    listener.send(b"SUB orders.new 1\r\n")
    quiet.send(_run() + b"PING\r\n")
    assert quiet.take() == b"PONG\r\n"
    assert _messages(listener.take()) == {b"1": _numbers()}


def test_a_verbose_client_gets_an_ok_before_each_message_of_a_run(wire):
    """nats-server acknowledges each PUB before it delivers it, to the publisher too."""
    broker = wire()
    client = _connected(broker, b'CONNECT {"verbose":true,"pedantic":false}\r\n')
    assert client.take() == b"+OK\r\n"
    client.send(b"SUB orders.new 1\r\n")
    assert client.take() == b"+OK\r\n"
    client.send(_run(count=3))
    assert client.take() == b"".join(b"+OK\r\nMSG orders.new 1 4\r\n%s\r\n" % p for p in _numbers(count=3))


def test_each_request_of_a_run_to_nobody_is_answered_no_responders(wire):
    broker = wire()
    requester = _connected(broker)
    requester.send(b"SUB _INBOX.me 9\r\n")
    requester.send(_run(count=3, subject=b"nobody.home", reply=b"_INBOX.me"))
    answer = b"HMSG _INBOX.me 9 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    assert requester.take() == answer * 3


def test_a_run_is_published_past_a_subscriber_that_fails(wire, monkeypatch):
    """A consumer whose delivery raises loses the run; the others get it."""
    broker = wire()
    broken, healthy, publisher = _connected(broker), _connected(broker), _connected(broker)
    broken.send(b"SUB orders.new 1\r\n")
    healthy.send(b"SUB orders.new 1\r\n")

    def fail(messages, subscriptions):
        raise RuntimeError("a bug in a consumer")

    monkeypatch.setattr(broken.protocol, "deliver_run", fail)
    publisher.send(_run() + b"PING\r\n")
    assert publisher.take() == b"PONG\r\n"
    assert _messages(healthy.take()) == {b"1": _numbers()}
    assert broken.take() == b""


def test_a_stream_stores_every_message_of_runs_in_order(start_broker):
    """nats-py writes many publishes in one go: a stream stores them all, in order."""
    broker = start_broker()

    async def scenario():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="RUNS", subjects=["runs.>"])
        for n in range(500):
            await nc.publish("runs.a", b"%04d" % n)
        await flushed(nc)
        info = await js.stream_info("RUNS")
        subscription = await js.pull_subscribe("runs.a", durable="reader")
        got = []
        while len(got) < 500:
            got += [m.data for m in await subscription.fetch(500 - len(got), timeout=5)]
        await nc.close()
        return info.state.messages, got

    stored, got = run(scenario())
    assert stored == 500
    assert got == [b"%04d" % n for n in range(500)]


def test_runs_from_two_publishers_keep_each_ones_order(start_broker):
    """Two nats-py publishers at once into one subscriber: each one's messages arrive in its order."""
    broker = start_broker()

    async def scenario():
        sub_nc = await nats.connect(broker.url)
        got = []
        done = asyncio.Event()

        async def take(msg):
            got.append(msg.data)
            if len(got) == 4000:
                done.set()

        await sub_nc.subscribe("fan.in", cb=take)
        await flushed(sub_nc)
        publishers = [await nats.connect(broker.url) for _ in range(2)]

        async def blast(nc, name):
            for n in range(2000):
                await nc.publish("fan.in", b"%s%04d" % (name, n))
            await flushed(nc)

        await asyncio.gather(blast(publishers[0], b"a"), blast(publishers[1], b"b"))
        await asyncio.wait_for(done.wait(), 10)
        for nc in publishers + [sub_nc]:
            await nc.close()
        return got

    got = run(scenario())
    for name in (b"a", b"b"):
        assert [data for data in got if data[:1] == name] == [b"%s%04d" % (name, n) for n in range(2000)]


def test_a_burst_of_many_reads_reaches_a_queue_group_and_a_subscriber_whole(start_broker):
    """Half a megabyte of PUBs in one write (several reads, read on in one
    batch): the queue group's members share them, each message once and
    each member's share in order, and a plain subscriber gets them all."""
    broker = start_broker()
    count = 5000

    async def scenario():
        listeners = [await nats.connect(broker.url) for _ in range(4)]
        shares = [[] for _ in range(4)]
        done = asyncio.Event()

        def taker(index):
            async def take(msg):
                shares[index].append(msg.data)
                if sum(map(len, shares)) == 2 * count:
                    done.set()
            return take

        for index, nc in enumerate(listeners):
            await nc.subscribe("burst.x", queue="workers" if index < 3 else "", cb=taker(index))
            await flushed(nc)
        publisher = RawClient(broker.port)
        publisher.read_line()  # INFO
        body = b"".join(b"PUB burst.x 100\r\n%s\r\n" % (b"%06d" % n).ljust(100, b".") for n in range(count))
        await asyncio.get_running_loop().run_in_executor(
            None, publisher.send, b'CONNECT {"verbose":false}\r\n' + body + b"PING\r\n")
        await asyncio.wait_for(done.wait(), 20)
        publisher.sock.close()
        for nc in listeners:
            await nc.close()
        return shares

    shares = run(scenario())
    expected = [(b"%06d" % n).ljust(100, b".") for n in range(count)]
    assert shares[3] == expected
    assert sorted(shares[0] + shares[1] + shares[2]) == expected
    for share in shares[:3]:
        assert share == sorted(share) and share


def test_no_responders_for_the_requests_of_a_run_after_the_only_subscriber_ends(wire):
    """The subscriber's UNSUB limit ends it at the first request: the second,
    in the same read, is answered "no responders", as it would be alone."""
    broker = wire()
    service, requester = _connected(broker), _connected(broker)
    service.send(b"SUB svc 1\r\nUNSUB 1 1\r\n")
    requester.send(b"SUB _INBOX.me 9\r\n")
    requester.send(_run(count=2, subject=b"svc", reply=b"_INBOX.me"))
    assert _messages(service.take()) == {b"1": _numbers(count=1)}
    assert requester.take() == b"HMSG _INBOX.me 9 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"


def test_a_responder_answers_a_request_once_however_many_answers_one_read_holds(start_broker):
    """allow_responses: one request, one answer; the others of the run are refused, as they would be one by one."""
    broker = start_broker(**{"auth.users": [
        {"name": "svc", "password": "s", "publish": [], "subscribe": ["svc/#"], "allow_responses": True},
        {"name": "client", "password": "c"}]})

    def connected(user, password, subscription):
        client = RawClient(broker.port)
        client.read_line()  # INFO
        client.send(b'CONNECT {"verbose":false,"pedantic":false,"user":"%s","pass":"%s"}\r\n%sPING\r\n'
                    % (user, password, subscription))
        assert client.read_line() == b"PONG"
        return client

    service = connected(b"svc", b"s", b"SUB svc.echo 1\r\n")
    client = connected(b"client", b"c", b"SUB inbox.1 7\r\n")
    client.send(b"PUB svc.echo inbox.1 1\r\nq\r\n")
    assert service.read_line() == b"MSG svc.echo 1 inbox.1 1"
    assert service.read_exact(3) == b"q\r\n"
    service.send(b"PUB inbox.1 1\r\na\r\n" * 3 + b"PING\r\n")
    lines = [service.read_line() for _ in range(3)]
    assert lines == [b"-ERR 'Permissions Violation for Publish to \"inbox.1\"'"] * 2 + [b"PONG"]
    client.send(b"PING\r\n")
    assert [client.read_line(), client.read_exact(3), client.read_line()] == [b"MSG inbox.1 7 1", b"a\r\n", b"PONG"]
