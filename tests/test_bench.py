"""flowmq-bench: the subscribers' frame counter and parser (sans-IO), and the
whole tool run as ``python -m flowmq.bench`` against a FlowMQ it starts
itself, on tiny counts: every message sent must be counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flowmq.bench import protocol, stats
from flowmq.bench.counter import FrameCounter

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


def _frames(n, subject=b"bench.1to1", size=16):
    return (protocol.msg_header(subject, b"1", size) + protocol.payload(size) + b"\r\n") * n


def _feed_in_pieces(counter, data, piece):
    for start in range(0, len(data), piece):
        counter.feed(data[start:start + piece])


@pytest.mark.parametrize("piece", [1, 7, 39, 40, 41, 4096, 1 << 20])
def test_counter_counts_frames_split_anywhere(piece):
    header = protocol.msg_header(b"bench.1to1", b"1", 16)
    counter = FrameCounter(header, 16, bufsize=4096)
    _feed_in_pieces(counter, _frames(1000), piece)
    assert (counter.count, counter.other, counter.errors) == (1000, 0, [])


def test_counter_answers_ping_and_counts_odd_frames_apart():
    header = protocol.msg_header(b"s", b"1", 16)
    odd = protocol.msg_header(b"s", b"1", 3) + b"abc\r\n"
    stream = _frames(100, b"s") + b"PING\r\n" + _frames(50, b"s") + odd + _frames(25, b"s") + b"+OK\r\n"
    for piece in (5, 64, len(stream)):
        counter = FrameCounter(header, 16, bufsize=256)
        _feed_in_pieces(counter, stream, piece)
        assert (counter.count, counter.other, counter.pings) == (175, 1, 1)
        assert counter.take_reply() == b"PONG\r\n"
        assert counter.take_reply() == b""


def test_counter_reports_server_errors():
    header = protocol.msg_header(b"s", b"1", 16)
    counter = FrameCounter(header, 16)
    counter.feed(_frames(3, b"s") + b"-ERR 'Slow Consumer'\r\n")
    assert counter.count == 3
    assert counter.errors == ["Slow Consumer"]


def test_parser_ops_and_pong_stop():
    parser = protocol.MsgParser()
    ops = parser.feed(b'INFO {"max_payload":1}\r\nPONG\r\nMSG a 1 r 2\r\nhi\r\n', until_pong=True)
    assert ops == [("INFO", {"max_payload": 1}), ("PONG",)]
    assert parser.rest() == b"MSG a 1 r 2\r\nhi\r\n"
    assert parser.feed(b"MSG a 1 r 2\r\nh") == []
    assert parser.feed(b"i\r\n-ERR 'x'\r\n") == [("MSG", b"a", b"1", b"r", b"hi"), ("-ERR", "x")]


def test_percentiles():
    values = list(range(1, 101))
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 99) == 99
    assert stats.latency_summary(values)["max_us"] == 100
    assert stats.spread([10, 10, 10])["spread_pct"] == 0


def test_tool_counts_every_message_against_flowmq(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "flowmq.bench", "--msgs", "2000", "--requests", "200",
               "--idle-connections", "100", "--many-subscriptions", "1000", "--sizes", "16,1024",
               "--timeout", "5", "--json", str(out), "--quiet"]
    for name in ("1to1", "fanout", "fanin", "queue", "reqrep", "idle", "manysubs"):
        command += ["--scenario", name]
    proc = subprocess.run(command, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)
    text = proc.stdout.decode()
    assert proc.returncode == 0, text + proc.stderr.decode()

    data = json.loads(out.read_text())
    [server] = data["servers"]
    assert server["kind"] == "FlowMQ" and server["pid"]
    results = {(r["scenario"], r["size"]): r for r in server["results"]}
    assert len(results) == 4 * 2 + 1 + 1 + 2  # sized scenarios twice, reqrep, idle, manysubs twice
    for r in results.values():
        assert r["complete"] and not r["errors"], r

    for size in (16, 1024):
        one = results[("1to1", size)]["details"]
        assert (one["published"], one["received"]) == (2000, 2000)
        fan = results[("fanout", size)]["details"]
        assert fan["published"] == 2000
        assert fan["received_per_subscriber"] == [2000] * 5
        assert fan["received"] == fan["published"] * 5
        fanin = results[("fanin", size)]["details"]
        assert (fanin["publishers"], fanin["published"], fanin["received"]) == (5, 2000, 2000)
        queue = results[("queue", size)]["details"]
        assert sum(queue["received_per_subscriber"]) == queue["published"] == 2000
        assert len(queue["received_per_subscriber"]) == 5
        many = results[("manysubs", size)]["details"]
        assert many["many"]["extra_subscriptions"] == 1000
        for run in (many["base"], many["many"]):
            assert run["received"] == run["published"] == 2000
    rr = results[("reqrep", 16)]["details"]
    assert rr["answered"] == rr["responder_replies"] == rr["requests"] == 200
    assert rr["latency"]["count"] == 200
    idle = results[("idle", None)]["details"]
    assert idle["opened"] == 100 and idle["rss_after"]

    for label in ("1to1", "fanout-5", "fanin-5", "queue-5", "reqrep-1x1", "idle-100", "manysubs-1000"):
        assert label in text
    for figure in ("publish msgs/s", "receive msgs/s", "receive MB/s", "per subscriber msgs/s",
                   "received per member", "requests/s", "latency p99 (us)", "RSS per connection",
                   "rate ratio", "10,000/10,000 received ok", "2,000/2,000 received ok",
                   "200/200 answered ok", "100/100 connected ok", "check: all 12 runs complete"):
        assert figure in text, figure
