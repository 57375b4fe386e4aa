"""flowmq-bench: the subscribers' frame counter and parser (sans-IO), and the
whole tool run as ``python -m flowmq.bench`` against a FlowMQ it starts
itself, on tiny counts: every message sent must be counted."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys

import pytest

from flowmq.bench import cli, jetstream, protocol, rounds, scenarios, servers, stats
from flowmq.bench.counter import FrameCounter

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


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


@pytest.mark.parametrize("piece", [65536, 99991, 3 << 20])
def test_counter_counts_1mb_frames_split_over_many_reads(piece):
    size = 1 << 20
    header = protocol.msg_header(b"bench.1to1", b"1", size)
    counter = FrameCounter(header, size)
    _feed_in_pieces(counter, _frames(3, size=size) + b"PING\r\n" + _frames(2, size=size), piece)
    assert (counter.count, counter.other, counter.pings, counter.errors) == (5, 0, 1, [])


def test_size_parser_takes_k_and_m_suffixes():
    assert cli._sizes("16,1k,64k,1m") == [16, 1024, 65536, 1048576]
    assert [cli._size(text) for text in ("1kb", "2MB", "512b", "1,024")] == [1024, 2 * 1048576, 512, 1024]
    assert cli.parse(["--sizes", "16,1k,64k,1m"]).sizes == [16, 1024, 65536, 1048576]
    assert cli.parse(["--max-bytes", "24m"]).max_bytes == 24 * 1048576
    for bad in ("1x", "k", "65m"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._size(bad)


def test_limits_are_raised_only_above_the_default_max_payload():
    assert servers.raised_limits(1048576) == {}  # exactly 1 MiB fits (the limit is inclusive)
    assert servers.raised_limits(2 * 1048576) == {"max_payload": 2 * 1048576 + servers.HEADROOM}
    big = servers.raised_limits(64 * 1048576)
    assert big["max_pending"] == servers.PENDING_PAYLOADS * big["max_payload"] > servers.DEFAULT_MAX_PENDING


def test_interpreter_is_asked_what_it_is():
    """The server line names the interpreter FlowMQ runs on; PyPy's with its nursery size."""
    text = servers.interpreter(sys.executable, dict(os.environ, PYPY_GC_NURSERY="8M"))
    pypy = platform.python_implementation() == "PyPy"
    assert text == "%s %s%s" % (platform.python_implementation(), platform.python_version(),
                                ", PYPY_GC_NURSERY=8M" if pypy else "")


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


def _pubacks(ns, stream=b"S", inbox=b"_INBOX.x", seq=lambda n: n + 1):
    out = []
    for n in ns:
        body = b'{"stream":"%s","seq":%d}' % (stream, seq(n))
        out.append(b"MSG %s.%d 1 %d\r\n%s\r\n" % (inbox, n, len(body), body))
    return b"".join(out)


@pytest.mark.parametrize("piece", [1, 5, 33, 4096])
def test_ack_scanner_matches_every_puback_to_its_message(piece):
    stream = _pubacks(range(300)) + b"PING\r\n" + _pubacks(range(300, 500))
    scanner = jetstream.AckScanner(500)
    owed = b"".join(scanner.feed(stream[i:i + piece]) for i in range(0, len(stream), piece))
    assert owed == b"PONG\r\n"
    assert (scanner.answered, scanner.acked, scanner.in_order) == (500, 500, 500)
    assert scanner.problems() == []


def test_ack_scanner_reports_wrong_seqs_duplicates_and_refusals():
    scanner = jetstream.AckScanner(10)
    error = b'{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S"}'
    scanner.feed(_pubacks(range(5)) + _pubacks([5], seq=lambda n: 9) + _pubacks([2])
                 + b"MSG _INBOX.x.6 1 %d\r\n%s\r\n" % (len(error), error) + _pubacks([7, 8, 9]))
    assert (scanner.answered, scanner.acked, scanner.in_order) == (10, 9, 8)
    assert (scanner.wrong_seq, scanner.duplicates, scanner.failed) == (1, 1, 1)
    text = "\n".join(scanner.problems())
    assert "message 5 stored at seq 9, expected 6" in text
    assert "a second PubAck for message 2" in text
    assert "message 6 refused" in text and "maximum messages exceeded" in text


def test_ack_scanner_no_responders_ends_the_run():
    scanner = jetstream.AckScanner(3)
    status = b"NATS/1.0 503\r\n\r\n"
    data = b"HMSG _INBOX.x.0 1 %d %d\r\n%s\r\n" % (len(status), len(status), status)
    scanner.feed(data[:20])
    scanner.feed(data[20:])
    assert scanner.fatal and "no responders" in scanner.fatal


def _deliveries(seqs, size=16, deliveries=1, subject=b"bench.js.pull"):
    return b"".join(b"MSG %s 1 $JS.ACK.S.c.%d.%d.%d.1700000000000000000.0 %d\r\n%s\r\n"
                    % (subject, deliveries, seq, seq, size, protocol.payload(size)) for seq in seqs)


@pytest.mark.parametrize("piece", [1, 7, 64, 65536])
def test_pull_scanner_acks_every_message_and_counts_each_seq_once(piece):
    scanner = jetstream.PullScanner(200, 16, b"_INBOX.p")
    scanner.requested(1, 200)
    stream = _deliveries(range(1, 101)) + b"PING\r\n" + _deliveries(range(101, 201))
    out = b"".join(scanner.feed(stream[i:i + piece]) for i in range(0, len(stream), piece))
    assert out.count(b"+ACK\r\n") == 200 and out.count(b"PONG\r\n") == 1
    assert out.startswith(b"PUB $JS.ACK.S.c.1.1.1.1700000000000000000.0 4\r\n+ACK\r\n")
    assert (scanner.received, scanner.owed, scanner.problems()) == (200, 0, [])


def test_pull_scanner_statuses_duplicates_and_redeliveries():
    scanner = jetstream.PullScanner(5, 16, b"_INBOX.p")
    scanner.requested(1, 5)
    status = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n\r\n"
    scanner.feed(_deliveries([1, 2]) + b"HMSG _INBOX.p.1 1 %d %d\r\n%s\r\n" % (len(status), len(status), status))
    assert (scanner.received, scanner.owed, scanner.fatal) == (2, 0, None)
    assert scanner.statuses == {"408 Request Timeout": 1}
    scanner.requested(2, 3)
    scanner.feed(_deliveries([2], deliveries=2) + _deliveries([3, 4, 5]) + b"PONG\r\n")
    assert (scanner.received, scanner.duplicates, scanner.redelivered, scanner.pongs) == (5, 1, 1, 1)
    status = b"NATS/1.0 409 Consumer Deleted\r\n\r\n"
    scanner.feed(b"HMSG _INBOX.p.2 1 %d %d\r\n%s\r\n" % (len(status), len(status), status))
    assert "409 Consumer Deleted" in scanner.fatal


def test_percentiles():
    values = list(range(1, 101))
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 99) == 99
    assert stats.latency_summary(values)["max_us"] == 100
    assert stats.spread([10, 10, 10])["spread_pct"] == 0


def _round(rate, complete=True, errors=(), scenario="1to1"):
    """A throughput result as scenarios.run makes it, with receive rate ``rate``."""
    return {"scenario": scenario, "label": scenario, "size": 16, "server": "FlowMQ", "complete": complete,
            "check": "%s received" % ("10/10" if complete else "9/10"), "errors": list(errors),
            "details": {"received": 10 if complete else 9},
            "figures": [{"name": "publish msgs/s", "value": rate + 1, "kind": "rate"},
                        {"name": "receive msgs/s", "value": rate, "kind": "rate"}]}


def test_rounds_report_the_median_round_whole_and_every_rounds_rate():
    merged = rounds.merge([_round(500000), _round(1500000), _round(900)])
    assert [f["value"] for f in merged["figures"]] == [500001, 500000, "500k 1.5M 900"]
    assert merged["details"] == {"received": 10, "rounds": [500000, 1500000, 900]}
    assert merged["complete"] and merged["check"] == "10/10 received"


def test_rounds_count_as_complete_only_if_every_round_was():
    merged = rounds.merge([_round(3), _round(2, complete=False, errors=["lost one"]), _round(1)])
    assert merged["figures"][1]["value"] == 1  # ranked among the complete rounds
    assert not merged["complete"]
    assert (merged["check"], merged["errors"]) == ("9/10 received (round 2 of 3)", ["round 2: lost one"])


def test_rounds_are_matched_by_scenario_when_a_round_left_one_out():
    """A --url server whose JetStream one round found and another did not."""
    per_round = [[_round(100, scenario="js-pub-sync"), _round(200)], [_round(300)],
                 [_round(400, scenario="js-pub-sync"), _round(500)]]
    merged = rounds.merge_all(per_round)
    assert [(r["scenario"], r["details"]["rounds"]) for r in merged] == [
        ("js-pub-sync", [100, 400]), ("1to1", [200, 300, 500])]
    assert merged[1]["figures"][1]["value"] == 300


def _run_tool(tmp_path, *args):
    """``python -m flowmq.bench ARGS --json FILE --quiet``, which must exit 0; returns (stdout, JSON)."""
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "flowmq.bench"] + list(args) + ["--json", str(out), "--quiet"],
                          cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    text = proc.stdout.decode()
    assert proc.returncode == 0, text + proc.stderr.decode()
    return text, json.loads(out.read_text())


def test_tool_counts_every_message_against_flowmq(tmp_path):
    args = ["--msgs", "2000", "--requests", "200", "--idle-connections", "100", "--many-subscriptions", "1000",
            "--sizes", "16,1024", "--timeout", "5"]
    for name in ("1to1", "fanout", "fanin", "queue", "reqrep", "idle", "manysubs"):
        args += ["--scenario", name]
    text, data = _run_tool(tmp_path, *args)
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


def test_tool_runs_every_round_and_reports_the_median_one(tmp_path):
    text, data = _run_tool(tmp_path, "--rounds", "3", "--scenario", "1to1", "--sizes", "16", "--msgs", "2000")
    [server] = data["servers"]
    [result] = server["results"]
    assert result["complete"] and result["details"]["received"] == 2000
    each = result["details"]["rounds"]
    assert len(each) == 3 and all(rate > 0 for rate in each)
    receive = next(f["value"] for f in result["figures"] if f["name"] == "receive msgs/s")
    assert receive == sorted(each)[1]
    assert "receive msgs/s, each round" in text


def _read_until_pong(sock, data=b"") -> bytes:
    """What ``sock`` gets up to and with the PONG that answers our PING."""
    sock.sendall(b"PING\r\n")
    while not data.endswith(b"PONG\r\n"):
        more = sock.recv(1 << 20)
        assert more, "the server closed the connection"
        data += more
    return data


def test_tool_warms_each_traffic_scenario_up_before_it_measures(tmp_path, twistd):
    """A witness subscriber of the scenario's subject sees the warm-up run
    (--warmup's share of the messages) before the measured run, which alone
    is reported; with --warmup 0, only the measured run."""
    broker = twistd(tmp_path / "data", "warm")
    header = protocol.msg_header(b"bench.1to1", b"1", 16)
    for share, seen in (("0.5", 3000), ("0", 2000)):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as witness:
            witness.sendall(b'CONNECT {"verbose":false}\r\nSUB bench.1to1 1\r\n')
            _read_until_pong(witness)
            text, data = _run_tool(tmp_path, "--url", broker.url, "--scenario", "1to1", "--sizes", "16",
                                   "--msgs", "2000", "--warmup", share)
            [result] = data["servers"][0]["results"]
            assert result["complete"] and result["details"]["received"] == 2000
            assert ("50% of its messages (--warmup)" if seen > 2000 else "measured cold (--warmup 0)") in text
            counter = FrameCounter(header, 16)
            counter.feed(_read_until_pong(witness))
            assert (counter.count, counter.other) == (seen, 0), share


def test_tool_counts_large_messages_and_measures_memory_and_generators(tmp_path):
    """--sizes 64k,1m on a FlowMQ run by the interpreter given with
    --flowmq-python: --max-bytes cuts each run's count, every 1 MB frame
    (many reads each) is counted, the server's RSS is read beside the
    messages in flight, and each worker says how busy it was."""
    text, data = _run_tool(tmp_path, "--flowmq-python", sys.executable, "--scenario", "1to1,fanout",
                           "--warmup", "0", "--sizes", "64k,1m", "--msgs", "400", "--max-bytes", "24m", "--timeout", "10")
    [server] = data["servers"]
    assert "(twistd, %s %s)" % (platform.python_implementation(), platform.python_version()) in server["description"]
    results = {(r["scenario"], r["size"]): r for r in server["results"]}
    assert sorted(results) == [("1to1", 65536), ("1to1", 1048576), ("fanout", 65536), ("fanout", 1048576)]
    growths = []
    for (_, size), r in results.items():
        assert r["complete"] and not r["errors"], r
        details = r["details"]
        count = {65536: 384, 1048576: 24}[size]  # min(--msgs, --max-bytes // size)
        assert details["messages"] == details["published"] == count
        assert details["received_per_subscriber"] == [count] * details["subscribers"]
        # Memory: the RSS at the start, the most in flight (1 MB frames fill the
        # socket buffers), a growth that memory left by an earlier run may keep at 0.
        assert details["server_rss_start"] > 0 and details["peak_in_flight"] > 0
        assert details["server_rss_peak_growth"] >= 0
        assert details["rss_per_in_flight"] == details["server_rss_peak_growth"] / details["peak_in_flight"]
        growths.append(details["server_rss_peak_growth"])
        figures = {f["name"]: f["value"] for f in r["figures"]}
        assert figures["server RSS growth MB (peak)"] == details["server_rss_peak_growth"] / stats.MB
        assert figures["RSS per in-flight msg KiB"] == details["rss_per_in_flight"] / 1024.0
        busy = details["worker_busy"]["pub"] + details["worker_busy"]["sub"]
        assert len(busy) == 1 + details["subscribers"]
        assert all(0 < fraction <= 1.5 for fraction in busy), busy
        assert details["generator_bound"] == (max(busy) >= scenarios.GENERATOR_BOUND)
        assert figures["busiest generator CPU"] == pytest.approx(100 * max(busy))
    assert max(growths) > 0  # the first 1 MB messages this server ever held
    assert "400 (384 at 64 KB, 24 at 1024 KB) messages per throughput run" in text
    for figure in ("--max-bytes", "server RSS growth MB (peak)", "RSS per in-flight msg KiB", "busiest generator CPU",
                   "120/120 received ok", "check: all 4 runs complete"):
        assert figure in text, figure
    assert ("generator-bound" in text) == any(r["details"]["generator_bound"] for r in results.values())


def test_tool_runs_the_jetstream_scenarios_against_flowmq(tmp_path):
    text, data = _run_tool(tmp_path, "--scenario", "js-pub-sync,js-pub-async,js-pull", "--js-msgs", "3000",
                           "--js-sync-msgs", "300", "--js-window", "500", "--js-batch", "200", "--sizes", "16,1024",
                           "--timeout", "5")
    [server] = data["servers"]
    assert server["kind"] == "FlowMQ"
    results = {(r["scenario"], r["size"]): r for r in server["results"]}
    assert sorted(results) == sorted((name, size) for name in ("js-pub-sync", "js-pub-async", "js-pull")
                                     for size in (16, 1024))
    for r in results.values():
        assert r["complete"] and not r["errors"], r
    for size in (16, 1024):
        sync = results[("js-pub-sync", size)]["details"]
        assert (sync["sent"], sync["acked"], sync["acked_in_order"]) == (300, 300, 300)
        assert sync["stream_state"]["last_seq"] == 300 and sync["latency"]["count"] == 300
        assert sync["stream"]["storage"] == "file"
        pub = results[("js-pub-async", size)]["details"]
        assert (pub["sent"], pub["acked_in_order"], pub["duplicate_acks"]) == (3000, 3000, 0)
        assert 0 < pub["max_outstanding"] <= 500
        assert pub["stream_state"]["messages"] == 3000
        pull = results[("js-pull", size)]["details"]
        assert pull["prefill"]["acked"] == 3000
        assert (pull["received"], pull["duplicates"], pull["redelivered"]) == (3000, 0, 0)
        assert pull["requests"] == 15
        assert pull["consumer_state"]["ack_floor"]["stream_seq"] == 3000
        assert pull["consumer_state"]["num_ack_pending"] == 0

    for label in ("js-pub-sync", "js-pub-async", "js-pull", "JetStream, file storage"):
        assert label in text
    for figure in ("publish msgs/s (PubAck received)", "PubAck latency p50 (us)", "consume msgs/s (each acked)",
                   "300/300 acked in order ok", "3,000/3,000 acked in order ok", "3,000/3,000 consumed ok",
                   "check: all 6 runs complete"):
        assert figure in text, figure


def test_tool_times_stream_creates_with_deep_subjects(tmp_path):
    """js-create: three STREAM.CREATEs (one per subject shape) answered with
    every subject, each timed, and the stream deleted after each."""
    text, data = _run_tool(tmp_path, "--scenario", "js-create", "--js-create-subjects", "50")
    [result] = data["servers"][0]["results"]
    assert result["complete"] and not result["errors"], result
    assert result["details"]["subjects"] == 50
    for shape in ("distinct", "shared prefix", "wildcards"):
        assert result["details"][shape]["seconds"] > 0
        assert "STREAM.CREATE, %s (ms)" % shape in text
    assert "3/3 streams created ok" in text


def test_deep_subject_sets_have_the_tokens_and_no_overlaps():
    from flowmq.bench.scenarios import deep_subject_sets
    from flowmq.core.filtertrie import FilterTrie, distinct_owners, overlapping
    from flowmq.nats.subjects import filter_to_topic_filter

    for _shape, subjects in deep_subject_sets("bench.js.create", 40):
        assert len(subjects) == len(set(subjects)) == 40
        assert all(subject.count(".") + 1 == 128 for subject in subjects)
        trie = FilterTrie((filter_to_topic_filter(s), s) for s in subjects)
        assert not any(distinct_owners(a, b) for a, b in overlapping(trie, trie))


def test_store_mode_prints_each_store_scenario():
    """``flowmq-bench --store`` on tiny counts: every scenario runs in process and prints its figures."""
    done = subprocess.run(
        [sys.executable, "-m", "flowmq.bench", "--store", "--store-backlog", "3000", "--store-deletes", "500",
         "--store-filters", "20", "--store-streams", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["delete", "filters", "filters", "sweep"], done.stdout
    assert "deletes 500" in lines[0] and "filters 20" in lines[1] and "filters 10" in lines[2]
    assert "streams 5" in lines[3]
