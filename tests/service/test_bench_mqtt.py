"""flowmq-bench's MQTT scenarios: the workers' PUBLISH and PUBACK counters
(sans-IO, fed what a server sends in pieces of every size), the comparison
tables, and the tool run as ``python -m flowmq.bench --scenario mqtt``
against a FlowMQ it starts itself (and beside mosquitto where it is
installed), on tiny counts: every message sent must be counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flowmq.bench import mqttwire, report, scenarios, servers
from flowmq.bench.mqttcounter import AckCounter, PublishCounter, puback
from flowmq.mqtt import codec
from flowmq.mqtt.codec import packets as P

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
TOPIC = b"bench/mqtt-qos1"


def _reader(level):
    """A reader past its CONNACK, as the workers' are after the handshake."""
    reader = mqttwire.PacketReader(level)
    reader.decode(codec.encode(P.Connack(), level))
    return reader


def _publishes(ids, level, qos, size=16, topic=TOPIC):
    return b"".join(mqttwire.publish_frame(topic, b"x" * size, qos, level, i if qos else None) for i in ids)


def _feed_in_pieces(counter, data, piece):
    owed = []
    for start in range(0, len(data), piece):
        counter.feed(data[start:start + piece])
        owed.append(counter.take_reply())
    return b"".join(owed)


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("piece", [1, 7, 37, 4096, 1 << 20])
def test_publish_counter_counts_publishes_split_anywhere(level, qos, piece):
    ids = [i % 65535 + 1 for i in range(65000, 66000)]  # the server's ids wrap around
    counter = PublishCounter(TOPIC, 16, qos, _reader(level), bufsize=4096)
    owed = _feed_in_pieces(counter, _publishes(ids, level, qos), piece)
    assert (counter.count, counter.other, counter.errors) == (1000, 0, [])
    assert owed == (b"".join(puback(i) for i in ids) if qos else b"")


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("piece", [65536, 99991])
def test_publish_counter_counts_1mb_publishes_split_over_many_reads(qos, piece):
    size = 1 << 20
    counter = PublishCounter(TOPIC, size, qos, _reader(5))
    owed = _feed_in_pieces(counter, _publishes(range(1, 4), 5, qos, size), piece)
    assert (counter.count, counter.other, counter.errors) == (3, 0, [])
    assert owed == (b"".join(puback(i) for i in range(1, 4)) if qos else b"")


def test_publish_counter_counts_odd_publishes_apart_and_reports_disconnect():
    level = 5
    counter = PublishCounter(TOPIC, 16, 1, _reader(level), bufsize=256)
    odd = [codec.encode(P.Publish("bench/other", b"x" * 16, 1, packet_id=7), level),  # another topic
           codec.encode(P.Publish(TOPIC.decode(), b"x" * 16, 1, dup=True, packet_id=8), level),  # a redelivery
           codec.encode(P.Publish(TOPIC.decode(), b"x" * 16, 1, packet_id=9,
                                  properties={"user_property": [("a", "b")]}), level)]  # counts, slowly
    stream = (_publishes(range(1, 6), level, 1) + b"".join(odd) + codec.encode(P.Pingresp(), level)
              + _publishes(range(10, 15), level, 1) + codec.encode(P.Disconnect(0x89), level))
    owed = _feed_in_pieces(counter, stream, 11)
    assert (counter.count, counter.other) == (11, 2)
    assert owed == b"".join(puback(i) for i in [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14])
    assert counter.errors == ["the server sent DISCONNECT, reason 0x89"]


@pytest.mark.parametrize("piece", [1, 3, 4, 64, 4096])
def test_ack_counter_counts_pubacks_in_order_across_the_id_wraparound(piece):
    counter = AckCounter(50, 10, _reader(5))
    acks = b"".join(puback(n % 50 + 1) for n in range(130))
    assert _feed_in_pieces(counter, acks, piece) == b""
    assert (counter.count, counter.refused, counter.errors) == (130, 0, [])


def test_ack_counter_counts_refusals_and_reports_pubacks_out_of_order():
    level = 5
    counter = AckCounter(100, 20, _reader(level))
    counter.feed(puback(1) + codec.encode(P.Puback(2, 0x97), level) + puback(3))  # 0x97: quota exceeded
    assert (counter.count, counter.refused, counter.errors) == (3, 1, [])
    counter.feed(puback(5))
    assert counter.count == 3
    assert counter.errors == ["PUBACK for packet id 5, expected 4 (out of order, MQTT-4.6.0-2)"]


class _Server:
    def __init__(self, kind, port=None, mqtt_port=None):
        self.kind = kind
        self.protocols = servers.Server(kind, "127.0.0.1", port, mqtt_port=mqtt_port).protocols


def _result(name, size, server, rate, generator_bound=False):
    return {"scenario": name, "label": name, "size": size, "server": server,
            "figures": [{"name": "receive msgs/s", "value": rate, "kind": "rate"},
                        {"name": "latency p50 (us)", "value": 50.0, "kind": "us"}],
            "check": "1/1 received ok", "complete": True, "errors": [],
            "details": {"generator_bound": generator_bound}}


def test_compare_tables_pair_each_protocol_with_its_reference_server():
    flowmq = _Server("FlowMQ", 4222, 1883)
    nats, mosquitto = _Server("nats-server", 4223), _Server("mosquitto", None, 1884)
    runs = [(flowmq, [_result("1to1", 16, "FlowMQ", 200.0), _result("mqtt-qos0", 16, "FlowMQ", 300.0),
                      _result("nats-to-mqtt", 16, "FlowMQ", 50.0)]),
            (nats, [_result("1to1", 16, "nats-server", 800.0)]),
            (mosquitto, [_result("mqtt-qos0", 16, "mosquitto", 100.0)])]
    first, second = report.table(runs).split("\n\n")
    assert first.splitlines()[0].split() == ["scenario", "size", "figure", "FlowMQ", "nats-server",
                                             "FlowMQ/nats-server"]
    assert "1to1" in first and "mqtt" not in first and "0.25" in first
    assert second.splitlines()[0].split() == ["scenario", "size", "figure", "FlowMQ", "mosquitto",
                                              "FlowMQ/mosquitto"]
    assert "1to1" not in second and "3.00" in second
    [n2m] = [line for line in second.splitlines() if line.startswith("nats-to-mqtt")]
    assert n2m.split()[-2:] == ["50", "n/a"]


def test_tables_mark_the_rates_of_generator_bound_runs():
    """A generator-bound run's rates end in " *", as does their ratio with
    either side bound; a footnote says why. Other figures are not marked."""
    flowmq, mosquitto = _Server("FlowMQ", None, 1883), _Server("mosquitto", None, 1884)
    runs = [(flowmq, [_result("mqtt-qos0", 16, "FlowMQ", 300.0), _result("mqtt-qos1", 16, "FlowMQ", 30.0)]),
            (mosquitto, [_result("mqtt-qos0", 16, "mosquitto", 100.0, generator_bound=True),
                         _result("mqtt-qos1", 16, "mosquitto", 10.0)])]
    text = report.table(runs)
    qos0, qos1 = [line.split() for line in text.splitlines() if "receive msgs/s" in line]
    assert qos0[-5:] == ["300", "100", "*", "3.00", "*"]
    assert qos1[-3:] == ["30", "10", "3.00"]
    for latency in (line.split() for line in text.splitlines() if "latency" in line):
        assert latency[-3:] == ["50", "50", "1.00"]  # not a rate
    assert text.splitlines()[-1] == report.FOOTNOTE
    assert "generator-bound" in report.FOOTNOTE and "90%" in report.FOOTNOTE
    assert report.FOOTNOTE not in report.table([runs[0], (mosquitto, [_result("mqtt-qos0", 16, "mosquitto", 1.0)])])


def _run_tool(tmp_path, *args, timeout=180):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "flowmq.bench", "--timeout", "5", "--json", str(out), "--quiet"]
                          + list(args), cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)
    text = proc.stdout.decode()
    assert proc.returncode == 0, text + proc.stderr.decode()
    return text, json.loads(out.read_text())


def _by_key(server):
    results = {(r["scenario"], r["size"]): r for r in server["results"]}
    for r in results.values():
        assert r["complete"] and not r["errors"], r
    return results


def test_tool_counts_every_mqtt_message_against_flowmq(tmp_path):
    text, data = _run_tool(tmp_path, "--scenario", "mqtt", "--mqtt-msgs", "3000", "--mqtt-qos1-msgs", "700",
                           "--sizes", "16,1024")
    [server] = data["servers"]
    assert server["kind"] == "FlowMQ" and server["protocols"] == ["mqtt", "nats"]
    results = _by_key(server)
    assert sorted(results) == sorted((name, size) for name in ("mqtt-qos0", "mqtt-qos1", "mqtt-fanout",
                                                               "nats-to-mqtt") for size in (16, 1024))
    for size in (16, 1024):
        qos0 = results[("mqtt-qos0", size)]["details"]
        assert (qos0["published"], qos0["received"]) == (3000, 3000)
        qos1 = results[("mqtt-qos1", size)]["details"]
        assert (qos1["published"], qos1["acked"], qos1["received"]) == (700, 700, 700)
        assert qos1["window"] == [20]  # FlowMQ's Receive Maximum (mqtt.max_inflight) is below --mqtt-window
        fan = results[("mqtt-fanout", size)]["details"]
        assert fan["received_per_subscriber"] == [3000] * 5
        n2m = results[("nats-to-mqtt", size)]["details"]
        assert (n2m["published"], n2m["received"]) == (3000, 3000)
    for label in ("mqtt-qos0", "mqtt-qos1", "mqtt-fanout-5", "nats-to-mqtt", "MQTT 5, messages per run"):
        assert label in text
    for figure in ("publish msgs/s (PUBACK received)", "per subscriber msgs/s", "15,000/15,000 received ok",
                   "700/700 received ok", "check: all 8 runs complete"):
        assert figure in text, figure


def test_tool_raises_flowmq_limits_for_2mb_mqtt_payloads(tmp_path):
    """1 MiB fits FlowMQ's MQTT defaults, 2 MiB does not: the tool raises them
    and says so; --max-bytes cuts the counts; every PUBLISH is counted and
    each MQTT worker says how busy it was."""
    text, data = _run_tool(tmp_path, "--scenario", "mqtt-qos0,mqtt-qos1", "--sizes", "1m,2m", "--mqtt-msgs", "100",
                           "--mqtt-qos1-msgs", "50", "--max-bytes", "20m")
    [server] = data["servers"]
    assert "raised for the largest payload: limits.max_payload 2,162,688" in server["description"]
    results = _by_key(server)
    for (name, size), r in results.items():
        details = r["details"]
        count = {1048576: 20, 2097152: 10}[size]  # min(--mqtt-msgs or --mqtt-qos1-msgs, --max-bytes // size)
        assert details["messages"] == details["published"] == details["received"] == count
        busy = details["worker_busy"]["pub"] + details["worker_busy"]["sub"]
        assert len(busy) == 2 and all(0 < fraction <= 1.5 for fraction in busy), busy
        assert details["generator_bound"] == (max(busy) >= scenarios.GENERATOR_BOUND)
        assert details["peak_in_flight"] is not None and details["server_rss_start"] > 0
    assert results[("mqtt-qos1", 2097152)]["details"]["acked"] == 10
    assert "mqtt-qos0 100 (20 at 1024 KB, 10 at 2048 KB), mqtt-qos1 50 (20 at 1024 KB, 10 at 2048 KB)" in text
    assert "raised for the largest payload" in text and "check: all 4 runs complete" in text


def test_tool_speaks_mqtt_3_1_1_too(tmp_path):
    text, data = _run_tool(tmp_path, "--scenario", "mqtt-qos0,mqtt-qos1", "--mqtt-version", "3.1.1",
                           "--mqtt-msgs", "2000", "--mqtt-qos1-msgs", "500", "--sizes", "16")
    results = _by_key(data["servers"][0])
    assert results[("mqtt-qos1", 16)]["details"]["window"] == [64]  # no Receive Maximum in 3.1.1
    assert results[("mqtt-qos0", 16)]["details"]["received"] == 2000
    assert "MQTT 3.1.1" in text and "check: all 2 runs complete" in text


@pytest.mark.skipif(not any(os.access(p, os.X_OK) for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")),
                    reason="mosquitto is not installed")
def test_tool_compares_the_mqtt_scenarios_with_mosquitto(tmp_path):
    text, data = _run_tool(tmp_path, "--compare", "--scenario", "mqtt", "--mqtt-msgs", "1000",
                           "--mqtt-qos1-msgs", "300", "--sizes", "16")
    flowmq, mosquitto = data["servers"]  # no nats-server: no NATS scenario was chosen
    assert (flowmq["kind"], mosquitto["kind"], mosquitto["protocols"]) == ("FlowMQ", "mosquitto", ["mqtt"])
    assert len(_by_key(flowmq)) == 4
    assert sorted(_by_key(mosquitto)) == [("mqtt-fanout", 16), ("mqtt-qos0", 16), ("mqtt-qos1", 16)]
    assert "FlowMQ/mosquitto" in text and "check: all 7 runs complete" in text
    [n2m] = [line for line in text.splitlines() if line.startswith("nats-to-mqtt")]
    assert n2m.rstrip().endswith("n/a")
