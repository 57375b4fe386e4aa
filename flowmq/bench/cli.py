"""The ``flowmq-bench`` command line (also ``python -m flowmq.bench``).

Exit status: 0 when every run was complete, 1 when a message was missing or
a run failed, 2 for usage errors and servers that cannot be started.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time

from flowmq.bench import mqttwire, report, scenarios, servers, store, suite, system
from flowmq.bench.progress import Progress

DESCRIPTION = """\
Benchmark a NATS and MQTT broker with raw NATS and MQTT over sockets from
separate worker processes. Without --url it starts FlowMQ (twistd -n flowmq)
on free loopback ports and stops it at the end; --compare also runs every
NATS scenario against nats-server and every MQTT one against mosquitto and
prints them side by side.

scenarios (--scenario, repeatable or comma-separated; default: all; the
JetStream ones are left out for a --url server without JetStream):
  1to1      1 publisher -> 1 subscriber
  fanout    1 publisher -> --subs subscribers (5), each gets every message
  fanin     --pubs publishers (5) -> 1 subscriber
  queue     1 publisher -> a queue group of --subs members (5)
  reqrep    --requesters (1) doing sequential requests against a queue
            group of --responders (1); requests/s and latency percentiles
  idle      --idle-connections (10,000) idle connections; the server's RSS
            increase per connection (needs its pid: a server the tool
            started, or --server-pid)
  manysubs  the 1to1 rate with 10 and with --many-subscriptions (100,000)
            extra subscriptions on distinct subjects, and their ratio
  js-pub-sync
            JetStream publish, one message at a time, each waiting for its
            PubAck (--js-sync-msgs, 20,000); msgs/s and PubAck latency
  js-pub-async
            JetStream publish with up to --js-window (4,000) PubAcks
            outstanding (--js-msgs, 100,000); msgs/s
  js-pull   a durable pull consumer (ack policy explicit, every message
            acked) reads a stream pre-filled with --js-msgs messages, one
            pull request of --js-batch (500) messages after the other; msgs/s
  js-create STREAM.CREATE of a memory stream with --js-create-subjects
            (1,000) subjects of 128 tokens, in three shapes (distinct
            branches, a shared prefix, every other token a *); ms each
  js        the four JetStream scenarios
  mqtt-qos0 1 MQTT publisher -> 1 MQTT subscriber, QoS 0 (--mqtt-msgs,
            200,000)
  mqtt-qos1 the same at QoS 1 (--mqtt-qos1-msgs, 50,000): the publisher
            keeps up to --mqtt-window (64) PUBLISHes unacknowledged (fewer
            if the server's Receive Maximum is lower), the subscriber
            acknowledges each
  mqtt-fanout
            1 MQTT publisher -> --subs MQTT subscribers (5), QoS 0
            (--mqtt-msgs)
  nats-to-mqtt
            1 NATS publisher -> 1 MQTT subscriber (QoS 0) of its subject's
            topic (--mqtt-msgs; FlowMQ only: "n/a" for mosquitto)
  mqtt      the four MQTT scenarios

js-pub-sync, js-pub-async and js-pull each create a file-storage stream FLOWMQ_BENCH_*
(deleting one an interrupted run left) and delete it after the run. They
check that message n got seq n+1 and that every seq was consumed once and
acknowledged. nats-server then runs with -js and a temporary -sd directory;
FlowMQ always gets a temporary --broker-data-dir.

Subjects are <--subject>.<scenario> (<--subject>.js.pub-sync ... for
JetStream); the extra subscriptions of manysubs are <--subject>.many.<i>;
MQTT topics are <--subject>/<scenario>. Throughput runs use every size of
--sizes; reqrep uses the first. MQTT workers speak MQTT 5 (--mqtt-version)
with Clean Start and no keep alive; mosquitto runs with a config file of
two lines (listener, allow_anonymous true), its defaults otherwise.

Warm-up: before each measured run of a throughput scenario (1to1, fanout,
fanin, queue, the js-* ones but js-create, the MQTT ones) the same
scenario runs once unreported with a share (--warmup, default 0.25) of
its messages and of --max-bytes, against every server alike: PyPy's JIT
compiles the paths a scenario takes during its first second, which a run
of a few seconds would otherwise measure. --warmup 0 measures servers
cold.

Large payloads (--sizes 16,1k,64k,1m): a run publishes at most --max-bytes
payload bytes, so fewer messages of a large payload; the header says how
many. Above 1 MiB (the default max_payload of FlowMQ and nats-server, which
a payload of exactly 1 MiB still fits) the tool raises the limits of the
servers it starts: max_payload to the largest size plus 64 KiB (FlowMQ's
MQTT max_packet_size 64 KiB above that) and, for payloads of more than
16 MiB, max_pending to four of them; their lines in the header say so.
mosquitto's packets have no limit but MQTT's.

Memory per in-flight message: with the server's pid the tool reads its RSS
100 times a second during each publish/subscribe run, with the messages in
flight at that moment (published so far minus what the slowest subscriber
got; for a queue group, minus what the group got). The JSON has the RSS at
the start, its peak growth and the most messages in flight; for payloads
of 64 KB and more the table adds "server RSS growth MB (peak)" and "RSS
per in-flight msg KiB", the peak growth over the most messages in flight.
That is an estimate: a message fanned out to five subscribers counts once
(one payload shared by its deliveries), messages in flight may sit in
socket buffers rather than in the server, and memory an earlier run left
to the server is used again without growth (the first run of a size on a
fresh server shows the most; with a warm-up, the warm-up is that run:
--warmup 0 for the memory of cold servers).

Generator-bound runs: each worker (publisher, subscriber, requester,
responder, JetStream client) measures its CPU and wall seconds from the
barrier to its end (a subscriber's: its last message); the JSON has each
one's busy fraction (CPU/wall) and the table the busiest as "busiest
generator CPU". A run where one was busy 90% or more is generator-bound:
its msgs/s and MB/s end in " *", and so does a ratio with such a run on
either side, because the figure may be the generator's limit, not the
server's.

--store runs the storage engine's own scenarios instead, in this process
(no server; the --store-* options size them):
  delete    --store-backlog (1,000,000) messages on one topic read by a
            filtered consumer, then --store-deletes (20,000) deletes in
            random order (acks of a work queue); deletes/s
  filters   next_message + count_pending over one log of 100,000 messages
            on 1,000 topics, with --store-filters (1,000) filters in turn,
            and with 10; lookups/s
  sweep     a compaction sweep and an interval sync sweep over
            --store-streams (1,000) idle file streams; microseconds each
"""


def _count(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError("not a whole number: %r" % text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1: %r" % text)
    return value


def _bytes(text: str) -> int:
    """A number of bytes, with an optional suffix k or kb (1024), m or mb (1024^2), b."""
    text = text.strip().lower()
    factor = 1
    for suffix, mult in (("kb", 1024), ("k", 1024), ("mb", 1024 * 1024), ("m", 1024 * 1024), ("b", 1)):
        if text.endswith(suffix):
            text, factor = text[:-len(suffix)], mult
            break
    try:
        return int(text.replace(",", "").replace("_", "")) * factor
    except ValueError:
        raise argparse.ArgumentTypeError("not a size: %r" % text)


def _size(text: str) -> int:
    value = _bytes(text)
    if value < 0 or value > 64 * 1024 * 1024:
        raise argparse.ArgumentTypeError("size out of range: %r" % text)
    return value


def _max_bytes(text: str) -> int:
    value = _bytes(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1: %r" % text)
    return value


def _sizes(text: str) -> list:
    return [_size(part) for part in text.split(",") if part.strip()]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive: %r" % text)
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be from 0 to 1: %r" % text)
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowmq-bench", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="benchmark the server running at nats://HOST:PORT instead of starting FlowMQ")
    p.add_argument("--server-pid", type=int, metavar="PID", help="with --url: the server's pid, for the idle scenario's memory figure")
    p.add_argument("--compare", action="store_true",
                   help="also start nats-server (NATS scenarios) and mosquitto (MQTT scenarios) and run each "
                        "scenario against FlowMQ and its protocol's reference server")
    p.add_argument("--scenario", action="append", metavar="NAME",
                   help="scenario to run (repeatable, or comma-separated): %s, or js, mqtt for the "
                        "JetStream, MQTT ones" % ", ".join(scenarios.NAMES))
    p.add_argument("--rounds", type=_count, default=1, metavar="N",
                   help="run everything N times, the servers taking turns, and report each scenario's median "
                        "round, with a row of every round's figure (default 1)")
    p.add_argument("--warmup", type=_share, default=0.25, metavar="SHARE",
                   help="before each measured run of a throughput scenario, run it unreported with this share of "
                        "its messages, so that PyPy's JIT has compiled the paths it measures (default 0.25; "
                        "0: measure cold servers)")
    p.add_argument("--msgs", type=_count, default=1000000, metavar="N", help="messages per throughput run (default 1,000,000)")
    p.add_argument("--requests", type=_count, default=20000, metavar="N", help="requests of the reqrep scenario (default 20,000)")
    p.add_argument("--js-msgs", type=_count, default=100000, metavar="N",
                   help="messages of js-pub-async and js-pull (default 100,000)")
    p.add_argument("--js-sync-msgs", type=_count, default=20000, metavar="N",
                   help="messages of js-pub-sync (default 20,000)")
    p.add_argument("--js-window", type=_count, default=4000, metavar="N",
                   help="PubAcks outstanding in js-pub-async and the js-pull prefill (default 4,000)")
    p.add_argument("--js-create-subjects", type=_count, default=1000, metavar="N",
                   help="subjects of each stream js-create creates (default 1,000, JetStream's most)")
    p.add_argument("--js-batch", type=_count, default=500, metavar="N",
                   help="messages per pull request of js-pull (default 500; the consumer's "
                        "max_ack_pending is the server's default, 1,000)")
    p.add_argument("--mqtt-msgs", type=_count, default=200000, metavar="N",
                   help="messages of mqtt-qos0, mqtt-fanout and nats-to-mqtt (default 200,000)")
    p.add_argument("--mqtt-qos1-msgs", type=_count, default=50000, metavar="N",
                   help="messages of mqtt-qos1 (default 50,000)")
    p.add_argument("--mqtt-window", type=_count, default=64, metavar="N",
                   help="most PUBLISHes a QoS 1 publisher leaves unacknowledged (default 64; fewer if the "
                        "server's Receive Maximum is lower)")
    p.add_argument("--mqtt-version", choices=sorted(mqttwire.LEVELS), default="5",
                   help="MQTT version of the MQTT workers (default 5)")
    p.add_argument("--mqtt-url", metavar="URL",
                   help="with --url: that server's MQTT listener, mqtt://HOST:PORT (without it the MQTT "
                        "scenarios are left out)")
    p.add_argument("--size", type=_size, metavar="BYTES", help="payload size in bytes (a single size; 1k = 1024)")
    p.add_argument("--sizes", type=_sizes, default=None, metavar="LIST",
                   help="comma-separated payload sizes (default 16,1024; 1k = 1024, 1m = 1048576, at most 64m)")
    p.add_argument("--max-bytes", type=_max_bytes, default=2000000000, metavar="BYTES",
                   help="most payload bytes one run publishes (default 2,000,000,000): a run publishes "
                        "min(its count, BYTES // size) messages, at least one, so that large payloads stay short")
    p.add_argument("--pubs", type=_count, default=5, metavar="N", help="publishers of the fanin scenario (default 5)")
    p.add_argument("--subs", type=_count, default=5, metavar="N", help="subscribers of the fanout and queue scenarios (default 5)")
    p.add_argument("--requesters", type=_count, default=1, metavar="N", help="requester processes of reqrep (default 1)")
    p.add_argument("--responders", type=_count, default=1, metavar="N", help="responder processes of reqrep (default 1)")
    p.add_argument("--subject", default="bench", metavar="PREFIX", help="subject prefix (default bench)")
    p.add_argument("--idle-connections", type=_count, default=10000, metavar="N", help="connections of the idle scenario (default 10,000)")
    p.add_argument("--idle-workers", type=_count, default=4, metavar="N", help="processes that open the idle connections (default 4)")
    p.add_argument("--many-subscriptions", type=_count, default=100000, metavar="N",
                   help="extra subscriptions of the manysubs scenario (default 100,000)")
    p.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="a receiver gives up after this many seconds without a message (default 10)")
    p.add_argument("--max-time", type=_seconds, default=600.0, metavar="SECONDS", help="most seconds one run may take (default 600)")
    p.add_argument("--setup-timeout", type=_seconds, default=30.0, metavar="SECONDS", help="most seconds for connecting and subscribing (default 30)")
    p.add_argument("--batch-bytes", type=_count, default=65536, metavar="N", help="bytes of PUB frames per send (default 65536)")
    p.add_argument("--flowmq-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `twistd -n flowmq` (repeatable; e.g. --flowmq-arg=--broker-log-level=warn)")
    p.add_argument("--flowmq-python", metavar="PATH",
                   help="the interpreter that runs the FlowMQ the tool starts (default: the tool's own); e.g. "
                        "a PyPy venv's python, with the load generators on CPython")
    p.add_argument("--nats-server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for nats-server (repeatable)")
    p.add_argument("--start-method", choices=("fork", "spawn", "forkserver"), default=None,
                   help="multiprocessing start method of the workers (default: fork on Linux)")
    p.add_argument("--store", action="store_true", help="run the storage engine's scenarios (in process) instead")
    store.add_arguments(p)
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    return p


def parse(argv=None):
    p = parser()
    cfg = p.parse_args(argv)
    names = []
    for item in cfg.scenario or list(scenarios.DEFAULT):
        for name in item.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in scenarios.NAMES and name not in scenarios.GROUPS:
                p.error("unknown scenario %r (choose from %s)" % (
                    name, ", ".join(scenarios.NAMES + tuple(scenarios.GROUPS))))
            for one in scenarios.GROUPS.get(name, (name,)):
                if one not in names:
                    names.append(one)
    cfg.scenarios = names
    cfg.scenarios_named = bool(cfg.scenario)
    cfg.jetstream = any(name in scenarios.JS_NAMES for name in names)
    if cfg.size is not None and cfg.sizes is not None:
        p.error("give --size or --sizes, not both")
    cfg.sizes = [cfg.size] if cfg.size is not None else (cfg.sizes or [16, 1024])
    if not cfg.sizes:
        p.error("--sizes needs at least one size")
    if cfg.server_pid is not None and not cfg.url:
        p.error("--server-pid goes with --url")
    if cfg.mqtt_url and not cfg.url:
        p.error("--mqtt-url goes with --url")
    if cfg.flowmq_python and cfg.url:
        p.error("--flowmq-python is for the FlowMQ the tool starts, not with --url")
    cfg.mqtt_level = mqttwire.LEVELS[cfg.mqtt_version]
    cfg.flowmq_args = [a for arg in cfg.flowmq_arg for a in shlex.split(arg)]
    cfg.nats_server_args = [a for arg in cfg.nats_server_arg for a in shlex.split(arg)]
    cfg.send_timeout = 30.0
    cfg.settle = 0.5  # seconds between the last idle connection and reading the RSS
    cfg.pause = 0.2   # seconds between runs, so the server finishes closing connections
    return cfg


def _stop_on_sigterm() -> None:
    """SIGTERM ends the tool like Ctrl-C: workers and servers are stopped.
    Forked workers inherit the handler; there it falls back to the default."""
    main_pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, handler)


def main(argv=None) -> int:
    cfg = parse(argv)
    if cfg.store:
        store.run(cfg)
        return 0
    system.raise_fd_limit()
    _stop_on_sigterm()
    progress = Progress(quiet=cfg.quiet)
    started = time.time()
    try:
        runs = suite.run(cfg, progress)
    except servers.ServerError as e:
        progress.clear()
        sys.stderr.write("flowmq-bench: error: %s\n" % (e,))
        return 2
    except KeyboardInterrupt:
        progress.clear()
        sys.stderr.write("flowmq-bench: interrupted\n")
        return 130
    progress.clear()
    text, ok = report.summary(runs)
    out = sys.stdout
    out.write(report.header(cfg, runs) + "\n\n")
    out.write(report.table(runs) + "\n\n")
    out.write(text + "\n")
    out.flush()
    if cfg.json:
        report.write_json(cfg.json, report.to_json(cfg, runs, started))
    return 0 if ok else 1
