"""Core NATS server behaviour over real sockets: nats-py and raw protocol bytes.

Request-reply with no responders, echo, UNSUB limits, the limits and their
nats-server error texts, slow consumers, keepalive, verbose mode, headers,
connection limits and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import nats
import nats.errors
import pytest

from conftest import RawClient, flushed, run


def _msg_frames(data: bytes) -> list:
    """The (subject, sid, payload) of each MSG frame in ``data``, in order."""
    frames = []
    pos = 0
    head = re.compile(rb"MSG (\S+) (\S+)(?: (\S+))? (\d+)\r\n")
    while True:
        match = head.search(data, pos)
        if not match:
            return frames
        start = match.end()
        size = int(match.group(4))
        frames.append((match.group(1), match.group(2), data[start:start + size]))
        pos = start + size + 2


def test_request_without_responders_fails_at_once(broker):
    async def scenario():
        nc = await nats.connect(broker.url)
        try:
            # A long timeout: only a no-responders status can end this request early.
            await nc.request("orders.nobody", b"x", timeout=20)
        finally:
            await nc.close()

    with pytest.raises(nats.errors.NoRespondersError):
        run(scenario())


def test_no_echo_keeps_own_messages_away(broker):
    async def scenario():
        quiet = await nats.connect(broker.url, no_echo=True)
        other = await nats.connect(broker.url)
        own, others = [], []

        async def on_own(msg):
            own.append(msg.data)

        async def on_other(msg):
            others.append(msg.data)

        await quiet.subscribe("chat", cb=on_own)
        await other.subscribe("chat", cb=on_other)
        await flushed(quiet)
        await flushed(other)
        await quiet.publish("chat", b"from quiet")
        await other.publish("chat", b"from other")
        for nc in (quiet, other, quiet):  # the last: what other published has reached quiet
            await flushed(nc)
        await quiet.close()
        await other.close()
        return own, sorted(others)

    own, others = run(scenario())
    assert own == [b"from other"]
    assert others == [b"from other", b"from quiet"]


def test_unsubscribe_after_n_messages(broker):
    async def scenario():
        nc = await nats.connect(broker.url)
        got = []

        async def handler(msg):
            got.append(msg.data)

        sub = await nc.subscribe("limited", cb=handler)
        await sub.unsubscribe(limit=3)
        for i in range(10):
            await nc.publish("limited", b"%d" % i)
        await flushed(nc)
        await nc.close()
        return got

    assert run(scenario()) == [b"0", b"1", b"2"]


def test_unsub_max_on_the_wire(raw_client):
    client = raw_client()
    client.handshake()
    client.send(b"SUB limited 7\r\nUNSUB 7 2\r\n")
    client.send(b"".join(b"PUB limited 1\r\n%d\r\n" % i for i in range(5)) + b"PING\r\n")
    lines = []
    while True:
        line = client.read_line()
        if line == b"PONG":
            break
        lines.append(line)
    assert lines == [b"MSG limited 7 1", b"0", b"MSG limited 7 1", b"1"]


def test_pipelined_frames_in_one_lump(raw_client):
    subscriber = raw_client()
    subscriber.handshake()
    subscriber.subscribe(b"lump.*")
    publisher = raw_client()
    publisher.handshake()
    payloads = [b"x" * n + b"\r\n" for n in range(50)]
    publisher.send(b"".join(b"PUB lump.%d %d\r\n%s\r\n" % (i, len(p), p) for i, p in enumerate(payloads))
                   + b"PING\r\n")
    assert publisher.read_line() == b"PONG"
    subscriber.send(b"PING\r\n")
    received = b""
    while not received.endswith(b"PONG\r\n"):
        received += subscriber.sock.recv(65536)
    frames = _msg_frames(received)
    assert [f[0] for f in frames] == [b"lump.%d" % i for i in range(50)]
    assert [f[2] for f in frames] == payloads


def test_max_payload_nats_py_refuses_before_sending(start_broker):
    broker = start_broker(**{"nats.max_payload": 1024})

    async def scenario():
        nc = await nats.connect(broker.url)
        try:
            assert nc.max_payload == 1024
            await nc.publish("big", b"x" * 1024)  # at the limit: fine
            await nc.publish("big", b"x" * 1025)
        finally:
            await nc.close()

    with pytest.raises(nats.errors.MaxPayloadError):
        run(scenario())


def test_max_payload_violation_closes_only_the_offender(start_broker):
    broker = start_broker(**{"nats.max_payload": 1024})
    bystander = RawClient(broker.port)
    bystander.handshake()
    bystander.subscribe(b"big")
    offender = RawClient(broker.port)
    offender.handshake()
    offender.send(b"PUB big 1025\r\n")
    assert offender.read_until_closed() == b"-ERR 'Maximum Payload Violation'\r\n"
    # The bystander still gets messages.
    publisher = RawClient(broker.port)
    publisher.handshake()
    publisher.send(b"PUB big 2\r\nok\r\n")
    assert bystander.read_line() == b"MSG big 1 2"
    assert bystander.read_line() == b"ok"
    for client in (bystander, offender, publisher):
        client.close()


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"FOO bar\r\n", b"-ERR 'Unknown Protocol Operation'"),
        (b"MSG a 1 1\r\nx\r\n", b"-ERR 'Unknown Protocol Operation'"),
        (b"PUB a 3\r\nabcdef\r\n", b"-ERR 'Unknown Protocol Operation'"),
        (b"SUB " + b"a" * 5000 + b" 1\r\n", b"-ERR 'Maximum Control Line Exceeded'"),
        (b"PUB " + b"a" * 5000, b"-ERR 'Maximum Control Line Exceeded'"),
        (b"PUB a notanumber\r\n", b"-ERR 'Parse Error: bad or missing size'"),
        (b"CONNECT {not json}\r\n", b"-ERR 'Parse Error: CONNECT needs a JSON object'"),
        (b"CONNECT [1]\r\n", b"-ERR 'Parse Error: CONNECT needs a JSON object'"),
        (b"CONNECT " + b"[" * 4000 + b"\r\n", b"-ERR 'Parse Error: CONNECT needs a JSON object'"),
        (b"CONNECT \xff\xfe\r\n", b"-ERR 'Parse Error: CONNECT needs a JSON object'"),
        (b'CONNECT {"no_responders":true}\r\n', b"-ERR 'no responders requires headers support'"),
        (b'CONNECT {"verbose":false}\r\nHPUB a 12 12\r\nNATS/1.0\r\n\r\n\r\n',
         b"-ERR 'message headers not supported'"),
    ],
)
def test_fatal_protocol_errors_close_with_err(raw_client, wire, error):
    client = raw_client()
    client.read_line()  # INFO
    client.send(wire)
    assert client.read_until_closed() == error + b"\r\n"


@pytest.mark.parametrize(
    "wire, error",
    [
        (b"SUB a..b 1\r\n", b"-ERR 'Invalid Subject'"),
        (b"SUB a.>.b 1\r\n", b"-ERR 'Invalid Subject'"),
        (b"PUB a.\xff 1\r\nx\r\n", b"-ERR 'Invalid Publish Subject'"),  # not UTF-8 (FlowMQ's own refusal)
        (b"HPUB a 5 6\r\nbad\r\nx\r\n", b"-ERR 'bad message header detected'"),
    ],
)
def test_recoverable_errors_keep_the_connection(raw_client, wire, error):
    client = raw_client()
    client.handshake()
    client.send(wire + b"SUB ok 1\r\nPUB ok 2\r\nhi\r\nPING\r\n")
    assert client.read_line() == error
    assert client.read_line() == b"MSG ok 1 2"
    assert client.read_line() == b"hi"
    assert client.read_line() == b"PONG"


@pytest.mark.parametrize("connect", [b'CONNECT {"verbose":true}\r\n', b"CONNECT {}\r\n", b""])
def test_verbose_mode_acknowledges_each_operation(raw_client, connect):
    """Verbose is on unless CONNECT turns it off, as in nats-server; +OK comes before delivery."""
    client = raw_client()
    client.read_line()
    client.send(connect + b"SUB v 1\r\nPUB v 1\r\nx\r\nUNSUB 1\r\nPUB nobody 0\r\n\r\n")
    expected = [b"+OK", b"+OK", b"MSG v 1 1", b"x", b"+OK", b"+OK"]
    if connect:
        expected.insert(0, b"+OK")
    assert [client.read_line() for _ in range(len(expected))] == expected


def test_info_describes_the_server(raw_client, broker):
    import json

    info = json.loads(raw_client().read_line()[5:])
    assert info["proto"] == 1
    assert info["headers"] is True
    assert info["max_payload"] == 1048576
    assert info["port"] == broker.port
    assert info["client_ip"] == "127.0.0.1"
    assert re.fullmatch(r"N[A-Z2-7]{55}", info["server_id"])
    assert isinstance(info["client_id"], int)
    assert info["server_name"] == "flowmq"


def test_headers_go_only_to_clients_that_support_them(raw_client):
    plain = raw_client()
    plain.handshake(b'{"verbose":false}')
    plain.subscribe(b"h")
    modern = raw_client()
    modern.handshake()
    modern.subscribe(b"h", b"9")
    block = b"NATS/1.0\r\nk: v\r\n\r\n"
    modern.send(b"HPUB h %d %d\r\n%shello\r\n" % (len(block), len(block) + 5, block))
    assert plain.read_line() == b"MSG h 1 5"
    assert plain.read_line() == b"hello"
    assert modern.read_line() == b"HMSG h 9 %d %d" % (len(block), len(block) + 5)
    assert modern.read_exact(len(block) + 7) == block + b"hello\r\n"


def test_max_connections(start_broker):
    broker = start_broker(**{"nats.max_connections": 2})
    first, second = RawClient(broker.port), RawClient(broker.port)
    first.handshake()
    second.handshake()
    third = RawClient(broker.port)
    assert third.read_line().startswith(b"INFO ")
    assert third.read_until_closed() == b"-ERR 'maximum connections exceeded'\r\n"
    first.close()
    # A place is free again once a client has gone.
    for _ in range(100):
        fourth = RawClient(broker.port)
        fourth.read_line()
        fourth.send(b"PING\r\n")
        try:
            if fourth.read_line() == b"PONG":
                break
        except ConnectionError:
            pass
        fourth.close()
    else:
        pytest.fail("the freed connection slot was never reused")
    for client in (second, third, fourth):
        client.close()


def test_max_subscriptions(start_broker):
    broker = start_broker(**{"nats.max_subscriptions": 2})
    client = RawClient(broker.port)
    client.handshake()
    client.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n")
    assert client.read_line() == b"-ERR 'maximum subscriptions exceeded'"
    assert client.read_line() == b"PONG"
    client.close()


def test_stale_connection_is_closed(start_broker):
    broker = start_broker(**{"nats.ping_interval": 0.1, "nats.max_pings_out": 2})
    client = RawClient(broker.port)
    client.handshake()
    assert client.read_until_closed() == b"PING\r\nPING\r\n-ERR 'Stale Connection'\r\n"


def test_answered_pings_keep_the_connection(start_broker):
    broker = start_broker(**{"nats.ping_interval": 0.1, "nats.max_pings_out": 2})
    client = RawClient(broker.port)
    client.handshake()
    for _ in range(6):
        assert client.read_line() == b"PING"
        client.send(b"PONG\r\n")
    client.send(b"SUB alive 1\r\nPUB alive 0\r\n\r\n")
    line = client.read_line()
    while line == b"PING":
        client.send(b"PONG\r\n")
        line = client.read_line()
    assert line == b"MSG alive 1 0"
    client.close()


def test_nats_py_answers_server_pings(start_broker):
    broker = start_broker(**{"nats.ping_interval": 0.1, "nats.max_pings_out": 2})

    async def scenario():
        nc = await nats.connect(broker.url, allow_reconnect=False)
        await asyncio.sleep(1.0)  # ten server PINGs
        connected = nc.is_connected
        await nc.close()
        return connected

    assert run(scenario()) is True


def test_slow_consumer_is_cut_off_while_a_fast_one_keeps_receiving(start_broker):
    # The slow reader is cut off by max_pending (or stall_deadline); the long
    # write_deadline leaves its farewell in place until the test reads it
    # (a closing connection is aborted, unsent bytes and all, after it).
    broker = start_broker(**{"nats.max_pending": 256 * 1024, "nats.write_deadline": 60.0})
    slow = RawClient(broker.port, rcvbuf=4096)
    slow.handshake()
    slow.subscribe(b"feed")
    count, size = 3000, 4096

    async def scenario():
        fast = await nats.connect(broker.url)
        received = []

        async def handler(msg):
            received.append(len(msg.data))

        await fast.subscribe("feed", cb=handler)
        await flushed(fast)
        publisher = await nats.connect(broker.url)
        # Paced in batches well under max_pending, so that a reader that
        # keeps up is never behind by more than one batch.
        for batch in range(count // 20):
            for _ in range(20):
                await publisher.publish("feed", b"x" * size)
            await flushed(publisher)
            await flushed(fast)
        # The callbacks run in their own task: let them catch up before closing.
        for _ in range(200):
            if len(received) == count:
                break
            await asyncio.sleep(0.01)
        await publisher.close()
        await fast.close()
        return received

    received = run(scenario())
    assert received == [size] * count
    data = slow.read_until_closed()
    assert data.endswith(b"-ERR 'Slow Consumer'\r\n")
    delivered = len(_msg_frames(data))
    assert 0 < delivered < count
    factory = broker.service.listeners["NATS"].factory
    assert broker.call(lambda: len(factory.connections)) == 0
    slow.close()


def test_shutdown_flushes_and_closes_connections(start_broker):
    broker = start_broker()
    subscriber = RawClient(broker.port)
    subscriber.handshake()
    subscriber.subscribe(b"bye")
    publisher = RawClient(broker.port)
    publisher.handshake()
    publisher.send(b"".join(b"PUB bye 3\r\n%03d\r\n" % i for i in range(200)))
    publisher.send(b"PING\r\n")
    assert publisher.read_line() == b"PONG"
    broker.stop()
    frames = _msg_frames(subscriber.read_until_closed())
    assert [f[2] for f in frames] == [b"%03d" % i for i in range(200)]
    assert publisher.read_until_closed() == b""
    with pytest.raises(OSError):
        RawClient(broker.port, timeout=1).read_line()


def test_deep_subjects_are_bounded(raw_client, broker):
    """Filters deeper than broker.max_topic_levels are refused; deep publish
    subjects still reach '>' subscribers; nothing is left behind at shutdown."""
    client = raw_client()
    client.handshake()
    deep = b".".join([b"a"] * 1500)
    client.send(b"SUB " + b".".join([b"*"] * 129) + b" 1\r\nSUB > 2\r\nPUB " + deep + b" 2\r\nhi\r\nPING\r\n")
    assert client.read_line() == b"-ERR 'Invalid Subject'"
    assert client.read_line() == b"MSG " + deep + b" 2 2"
    assert client.read_line() == b"hi"
    assert client.read_line() == b"PONG"


def test_no_responders_status_does_not_count_against_unsub_limit(raw_client):
    client = raw_client()
    client.handshake()
    client.send(b"SUB _INBOX.me.* 7\r\nUNSUB 7 2\r\n")
    for i in range(3):
        client.send(b"PUB nobody _INBOX.me.%d 0\r\n\r\n" % i)
        assert client.read_line() == b"HMSG _INBOX.me.%d 7 16 16" % i
        assert client.read_exact(18) == b"NATS/1.0 503\r\n\r\n\r\n"
    client.send(b"PUB _INBOX.me.x 1\r\na\r\nPUB _INBOX.me.y 1\r\nb\r\nPUB _INBOX.me.z 1\r\nc\r\nPING\r\n")
    assert [client.read_line() for _ in range(5)] == [
        b"MSG _INBOX.me.x 7 1", b"a", b"MSG _INBOX.me.y 7 1", b"b", b"PONG",
    ]


def test_a_reading_subscriber_slows_fast_publishers_down_instead_of_being_cut_off(start_broker):
    """Flow control: 5 MB published at once towards a subscriber that reads
    slower than that, with only 256 KB allowed to wait for it. The publisher
    is held back while the subscriber catches up; nothing is lost."""
    broker = start_broker(**{"nats.max_pending": 256 * 1024, "nats.write_deadline": 10.0})
    subscriber = RawClient(broker.port, rcvbuf=16384)
    subscriber.handshake()
    subscriber.subscribe(b"flow")
    publisher = RawClient(broker.port)
    publisher.handshake()
    count, payload = 5000, b"p" * 1024
    frame = b"MSG flow 1 1024\r\n" + payload + b"\r\n"
    publisher.send(b"PUB flow 1024\r\n" + payload + b"\r\n")  # one first, so the subscriber sees traffic
    sender = threading.Thread(
        target=publisher.send, args=(b"".join(b"PUB flow 1024\r\n" + payload + b"\r\n" for _ in range(count - 1)),)
    )
    sender.start()
    received = b""
    while len(received) < count * len(frame):
        chunk = subscriber.sock.recv(16384)
        assert chunk, "the subscriber was cut off after %d messages" % (len(received) // len(frame))
        received += chunk
        time.sleep(0.0005)  # a reader slower than the publisher
    sender.join()
    assert received == frame * count
    publisher.send(b"PING\r\n")
    assert publisher.read_line() == b"PONG"
    subscriber.close()
    publisher.close()
