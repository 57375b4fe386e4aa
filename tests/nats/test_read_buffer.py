"""Runs of PUBs read into the reused read buffer (flowmq/rawbytes.py).

On PyPy a plain TCP connection reads into one buffer that every read
reuses, the parser hands a run's payloads out as where they lie in it
(``NatsParser.feed_read_buffer``), and a lone subscriber's frames are made
from there into a reused output buffer. The parser's part is checked
against ``feed`` on any stream cut anywhere (both interpreters: the tests
make the buffers with cffi on CPython too); over real sockets (the path
the broker takes on PyPy), PUBs cut at random points reach a lone
subscriber, a fan-out and a queue group byte for byte and in order.
"""

from __future__ import annotations

import random
import re
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmq import rawbytes
from flowmq.connection import GATHER_WRITE_AT
from flowmq.nats.codec import OP_PUB, NatsParser
from tests.conftest import RawClient

#: PUB lines: payloads from rawbytes.OUTPUT_FROM up to GATHER_WRITE_AT stay in the buffer, others are copied out.
LINES = [b"PUB a.b 5\r\n", b"PUB a.c 0\r\n", b"PUB a.c 1000\r\n", b"PUB a.c r.1 1000\r\n",
         b"PUB a.d %d\r\n" % rawbytes.OUTPUT_FROM, b"PUB a.e 3000\r\n", b"pub a.f 700\r\n",
         b"PUB a.g 1000\r\n",  # as long as a.c's, for the same size: only the subject tells them apart
         b"PUB a.h %d\r\n" % GATHER_WRITE_AT]


def _op_stream(ops: list) -> list:
    """The operations one by one: a run spread into one PUB per payload, each as bytes."""
    spread = []
    for op in ops:
        if op[0] == OP_PUB:
            spread += [(OP_PUB, op[1], op[2], bytes(payload)) for payload in op[3]]
        else:
            spread.append(op)
    return spread


@st.composite
def streams(draw):
    """A client's bytes: runs of PUBs on a few lines (maybe ending in one
    whose payload is longer than its line says, or in one over the largest
    payload, where the parser stops), pings, HPUBs; cut into reads of up to
    a read buffer's size."""
    rng = random.Random(draw(st.integers(0, 1 << 30)))
    pieces = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["run", "run", "run", "ping", "hpub", "large hpub"]))
        if kind == "run":
            line = draw(st.sampled_from(LINES))
            size = int(line.split()[-1])
            pieces += [line + rng.randbytes(size) + b"\r\n" for _ in range(draw(st.integers(1, 150)))]
            end = draw(st.integers(0, 19))
            if end == 0:
                pieces.append(line + bytes(size + 1) + b"\r\n")
            elif end == 1:
                pieces.append(b"PUB a.c 2000000\r\n")
        elif kind == "ping":
            pieces.append(b"PING\r\n")
        elif kind == "hpub":
            pieces.append(b"HPUB a.h 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
        else:
            pieces.append(b"HPUB a.h 12 612\r\nNATS/1.0\r\n\r\n%s\r\n" % rng.randbytes(600))
    data = b"".join(pieces)
    ends = [sum(map(len, pieces[:index + 1])) for index in range(len(pieces))]
    # Cuts anywhere, and between two operations (a read that begins with a new line).
    cuts = sorted(draw(st.lists(st.integers(0, len(data)) | st.sampled_from(ends), max_size=12)))
    reads, start = [], 0
    for cut in cuts + [len(data)]:
        while cut - start > rawbytes.READ_SIZE:
            reads.append(data[start:start + rawbytes.READ_SIZE])
            start += rawbytes.READ_SIZE
        if cut > start:
            reads.append(data[start:cut])
            start = cut
    return reads


@settings(max_examples=300, deadline=None)
@given(reads=streams())
def test_the_read_buffer_parses_any_stream_as_feed_does(reads):
    plain, buffered = NatsParser(), NatsParser()
    expected, got = [], []
    for index, read in enumerate(reads):
        expected += _op_stream(plain.feed(read))
        # The buffer holds the read and, after it, the bytes that follow
        # it on the wire: a parser that looked past the read would find them.
        beyond = b"".join(reads[index + 1:])[:rawbytes.READ_SIZE - len(read)]
        if buffered.takes_read_buffer(GATHER_WRITE_AT):  # as the NATS connection asks for its reads
            rawbytes.READ_VIEW[:len(read) + len(beyond)] = read + beyond
            got += _op_stream(buffered.feed_read_buffer(len(read)))  # payloads taken before the next read
            rawbytes.end_read()
        else:
            got += _op_stream(buffered.feed(read))
    assert got == expected


def test_a_run_of_the_read_buffer_is_payloads_in_place_until_the_read_ends():
    size = rawbytes.OUTPUT_FROM
    line = b"PUB a.b %d\r\n" % size
    one, two, six, ten = (bytes([n]) * size for n in b"a26t")
    parser = NatsParser()
    parser.feed(line + one + b"\r\n")  # the line is known: the next read's PUBs are a run in the buffer
    read = line + two + b"\r\n" + line + six + b"\r\n" + line + ten[:7]
    rawbytes.READ_VIEW[:len(read)] = read
    ops = parser.feed_read_buffer(len(read))
    run = ops[0][3]
    assert isinstance(run, rawbytes.PayloadRun) and len(run) == 2
    output = rawbytes.borrow()
    try:
        assert output.add_run(b"MSG a.b 1 %d\r\n" % size, run)
        assert bytes(output.view()) == b"".join(b"MSG a.b 1 %d\r\n%s\r\n" % (size, p) for p in (two, six))
    finally:
        output.release()
    rawbytes.end_read()
    with pytest.raises(RuntimeError):
        list(run)  # its bytes are gone: the buffer belongs to the next read
    rest = ten[7:] + b"\r\n"
    rawbytes.READ_VIEW[:len(rest)] = rest
    assert _op_stream(parser.feed_read_buffer(len(rest))) == [(OP_PUB, b"a.b", None, ten)]
    rawbytes.end_read()


def test_a_read_that_begins_with_another_line_as_long_is_not_taken_for_the_run():
    size = rawbytes.OUTPUT_FROM
    parser = NatsParser()
    parser.feed(b"PUB a.b %d\r\n%s\r\n" % (size, bytes(size)))
    read = b"PUB a.c %d\r\n%s\r\n" % (size, b"c" * size)
    assert parser.takes_read_buffer(GATHER_WRITE_AT)
    rawbytes.READ_VIEW[:len(read)] = read
    assert _op_stream(parser.feed_read_buffer(len(read))) == [(OP_PUB, b"a.c", None, b"c" * size)]
    rawbytes.end_read()


MSG = re.compile(rb"MSG (\S+) (\S+) (\d+)\r\n")


def _subscriber(port: int, subscriptions: bytes) -> RawClient:
    client = RawClient(port, timeout=20)
    client.read_line()  # INFO
    client.send(b'CONNECT {"verbose":false}\r\n' + subscriptions + b"PING\r\n")
    assert client.read_line() == b"PONG"
    return client


def _payloads(client: RawClient, count: int) -> list:
    """The next ``count`` MSG payloads, each frame checked whole."""
    got = []
    while len(got) < count:
        match = MSG.fullmatch(client.read_line() + b"\r\n")
        assert match
        size = int(match.group(3))
        frame = client.read_exact(size + 2)
        assert frame[size:] == b"\r\n"
        got.append(frame[:size])
    return got


def _share(client: RawClient) -> list:
    """The payloads a queue member got before the PONG to its PING."""
    client.send(b"PING\r\n")
    share = []
    while True:
        line = client.read_line()
        if line == b"PONG":
            return share
        share.append(client.read_exact(int(MSG.fullmatch(line + b"\r\n").group(3)) + 2)[:-2])


def test_pubs_cut_anywhere_reach_a_subscriber_a_fan_out_and_a_queue_group_whole(start_broker):
    """One subject with a lone subscriber (its frames made in an output
    buffer on PyPy), every seventh message also to a subject with two
    subscribers and a queue group of two (frames shared, shares dealt):
    the publisher's writes cut at random points, some read apart."""
    broker = start_broker()
    examples = iter(range(1000))

    @settings(max_examples=15, deadline=None)
    @given(size=st.integers(0, 3000), count=st.integers(2, 400), seed=st.integers(0, 1 << 30))
    def check(size, count, seed):
        n = next(examples)
        lone_subject, fan_subject = b"lone.%d" % n, b"fan.%d" % n
        lone = _subscriber(broker.port, b"SUB %s 1\r\n" % lone_subject)
        fan = [_subscriber(broker.port, b"SUB %s 1\r\n" % fan_subject) for _ in range(2)]
        workers = [_subscriber(broker.port, b"SUB %s jobs 7\r\n" % fan_subject) for _ in range(2)]
        rng = random.Random(seed)
        # Numbered where there is room, so that a share's order shows.
        payloads = [((b"%06d" % k) + rng.randbytes(size))[:size] for k in range(count)]
        fanned = [p for k, p in enumerate(payloads) if k % 7 == 3]
        data = b"".join(b"PUB %s %d\r\n%s\r\n" % (lone_subject, size, p)
                        + (b"PUB %s %d\r\n%s\r\n" % (fan_subject, size, p) if k % 7 == 3 else b"")
                        for k, p in enumerate(payloads))
        publisher = RawClient(broker.port)
        publisher.read_line()  # INFO
        publisher.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        publisher.send(b'CONNECT {"verbose":false}\r\n')
        start = 0
        while start < len(data):
            stop = min(len(data), start + rng.choice([1, 7, 100, 1500, 20000, 70000]))
            publisher.send(data[start:stop])
            if rng.random() < 0.2:
                time.sleep(0.002)  # read apart from what follows
            start = stop
        assert _payloads(lone, count) == payloads
        for client in fan:
            assert _payloads(client, len(fanned)) == fanned
        publisher.send(b"PING\r\n")
        assert publisher.read_line() == b"PONG"  # every delivery is queued by now
        shares = [_share(client) for client in workers]
        assert sorted(shares[0] + shares[1]) == sorted(fanned)
        if size >= 6:
            for share in shares:
                assert share == sorted(share)
        for client in [lone, publisher] + fan + workers:
            client.sock.close()

    check()
