"""The scenarios: each runs its worker processes against one server and
returns a result dict (JSON-ready) with its figures and its check.

``cfg`` is the parsed command line (see ``cli``). A result has ``scenario``,
``label``, ``size``, ``server``, ``figures`` (ordered ``{"name", "value",
"kind"}``), ``check`` (did every message arrive / get an answer),
``complete``, ``errors`` and ``details``.
"""

from __future__ import annotations

import array
import json
import time

from typing import NamedTuple

from flowmq.bench import idle, jetstream, launch, mqttpubsub, protocol, pubsub, reqrep, stats, system
from flowmq.nats.subjects import subject_to_topic

JS_TRAFFIC = ("js-pub-sync", "js-pub-async", "js-pull")
JS_NAMES = JS_TRAFFIC + ("js-create",)
MQTT_NAMES = ("mqtt-qos0", "mqtt-qos1", "mqtt-fanout", "nats-to-mqtt")
NAMES = ("1to1", "fanout", "fanin", "queue", "reqrep", "idle", "manysubs") + JS_NAMES + MQTT_NAMES
SIZED = ("1to1", "fanout", "fanin", "queue", "manysubs") + JS_TRAFFIC + MQTT_NAMES  # once per payload size
# The throughput scenarios, each warmed up before it is measured (suite.py); reqrep, idle,
# manysubs and js-create are measured as they come.
TRAFFIC = ("1to1", "fanout", "fanin", "queue") + JS_TRAFFIC + MQTT_NAMES
# The options that set how long a TRAFFIC run is, in messages and in payload bytes at most
# (a warm-up run is a share of each).
RUN_LENGTHS = ("msgs", "js_msgs", "js_sync_msgs", "mqtt_msgs", "mqtt_qos1_msgs", "max_bytes")
GROUPS = {"js": JS_NAMES, "mqtt": MQTT_NAMES}  # --scenario js, --scenario mqtt: all of them
DEFAULT = NAMES  # what runs without --scenario (the JetStream set takes about 20 s per server, MQTT 25 s)
BASE_EXTRA_SUBSCRIPTIONS = 10
# The streams (file storage) and the consumer of the JetStream scenarios; a
# stream of that name that an interrupted run left behind is deleted first.
JS_STREAMS = {"js-pub-sync": "FLOWMQ_BENCH_PUB_SYNC", "js-pub-async": "FLOWMQ_BENCH_PUB_ASYNC",
              "js-pull": "FLOWMQ_BENCH_PULL", "js-create": "FLOWMQ_BENCH_CREATE"}
#: Tokens of each subject of js-create's streams (FlowMQ's broker.max_topic_levels).
JS_CREATE_TOKENS = 128
JS_CONSUMER = "flowmq-bench"
#: A worker busy this fraction of its measured window (CPU/wall) or more
#: makes its run generator-bound: the figure may be the generator's limit.
GENERATOR_BOUND = 0.9
#: Payload sizes from which publish/subscribe runs show the server's memory per in-flight message.
MEMORY_FIGURES_FROM = 64 * 1024
#: Seconds between the coordinator's looks at a publish/subscribe run (progress, RSS, in flight).
_WATCH_POLL = 0.01


def needs(name: str) -> frozenset:
    """The listeners a scenario needs: "nats", "mqtt" or both (nats-to-mqtt)."""
    if name == "nats-to-mqtt":
        return frozenset(("nats", "mqtt"))
    return frozenset(("mqtt",) if name in MQTT_NAMES else ("nats",))


def family(name: str) -> str:
    """The protocol whose reference server a scenario is compared with."""
    return "mqtt" if "mqtt" in needs(name) else "nats"


def label(cfg, name: str) -> str:
    if name == "1to1":
        return "1to1"
    if name in ("fanout", "queue", "mqtt-fanout"):
        return "%s-%d" % (name, cfg.subs)
    if name == "fanin":
        return "fanin-%d" % cfg.pubs
    if name == "reqrep":
        return "reqrep-%dx%d" % (cfg.requesters, cfg.responders)
    if name == "idle":
        return "idle-%d" % cfg.idle_connections
    if name == "manysubs":
        return "manysubs-%d" % cfg.many_subscriptions
    return name


def size_text(size) -> str:
    if size is None:
        return "-"
    if size >= 1024 and size % 1024 == 0:
        return "%d KB" % (size // 1024)
    return "%d B" % size


def messages(cfg, count: int, size) -> int:
    """The messages of a run: ``count``, or fewer so that the run publishes at
    most --max-bytes payload bytes (at least one message)."""
    if not size:
        return count
    return max(1, min(count, cfg.max_bytes // size))


def run(name: str, server, cfg, size, progress) -> dict:
    """Run scenario ``name`` once; never raises for a failed run (the result
    then says what went wrong)."""
    result = {"scenario": name, "label": label(cfg, name), "size": size, "server": server.kind,
              "figures": [], "check": "", "complete": False, "errors": [], "details": {}}
    try:
        if not server.alive():
            raise protocol.BenchError("the server is not running any more")
        missing = needs(name) - server.protocols
        if missing:
            raise protocol.BenchError("%s has no %s listener%s" % (
                server.kind, " and ".join(sorted(p.upper() for p in missing)),
                " (give its address with --mqtt-url)" if "mqtt" in missing and server.process is None else ""))
        if name == "1to1":
            _pubsub(result, server, cfg, progress, size, pubs=1, subs=1, queue=False)
        elif name == "fanout":
            _pubsub(result, server, cfg, progress, size, pubs=1, subs=cfg.subs, queue=False)
        elif name == "fanin":
            _pubsub(result, server, cfg, progress, size, pubs=cfg.pubs, subs=1, queue=False)
        elif name == "queue":
            _pubsub(result, server, cfg, progress, size, pubs=1, subs=cfg.subs, queue=True)
        elif name == "mqtt-qos0":
            _mqtt_pubsub(result, server, cfg, progress, size, subs=1, qos=0)
        elif name == "mqtt-qos1":
            _mqtt_pubsub(result, server, cfg, progress, size, subs=1, qos=1)
        elif name == "mqtt-fanout":
            _mqtt_pubsub(result, server, cfg, progress, size, subs=cfg.subs, qos=0)
        elif name == "nats-to-mqtt":
            _nats_to_mqtt(result, server, cfg, progress, size)
        elif name == "reqrep":
            _reqrep(result, server, cfg, progress, size)
        elif name == "idle":
            _idle(result, server, cfg, progress)
        elif name == "manysubs":
            _manysubs(result, server, cfg, progress, size)
        elif name == "js-pub-sync":
            _js_publish(result, server, cfg, progress, size, window=None)
        elif name == "js-pub-async":
            _js_publish(result, server, cfg, progress, size, window=cfg.js_window)
        elif name == "js-pull":
            _js_pull(result, server, cfg, progress, size)
        elif name == "js-create":
            _js_create(result, server, cfg, progress)
        else:
            raise ValueError("unknown scenario %r" % name)
    except Exception as e:  # one failed scenario must not stop the others
        result["errors"].append("%s: %s" % (type(e).__name__, e))
    finally:
        progress.clear()
    if result["errors"]:
        result["complete"] = False
        if not result["check"]:
            result["check"] = "ERROR"
    return result


def _worker_opts(server, cfg) -> dict:
    return {"host": server.host, "port": server.port, "idle_timeout": cfg.timeout,
            "max_time": cfg.max_time, "setup_timeout": cfg.setup_timeout,
            "send_timeout": cfg.send_timeout, "batch_bytes": cfg.batch_bytes}


def _mqtt_opts(server, cfg, qos: int) -> dict:
    """The options of an MQTT worker: the server's MQTT port, the protocol
    level, the QoS and the QoS 1 publisher's window."""
    opts = _worker_opts(server, cfg)
    opts.update(port=server.mqtt_port, mqtt_level=cfg.mqtt_level, mqtt_qos=qos, mqtt_window=cfg.mqtt_window)
    return opts


def _shares(total: int, parts: int) -> list:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _figure(result, name, value, kind):
    result["figures"].append({"name": name, "value": value, "kind": kind})


def _generators(details, reports) -> None:
    """Each worker's CPU and wall seconds over its measured window and their
    ratio, by role (``worker_cpu_s``, ``worker_wall_s``, ``worker_busy``), the
    busiest and whether that makes the run generator-bound."""
    ordered = sorted(reports, key=lambda r: r["slot"])
    for key, field in (("worker_cpu_s", "cpu_s"), ("worker_wall_s", "wall_s"), ("worker_busy", "busy")):
        by_role = {}
        for r in ordered:
            by_role.setdefault(r["role"], []).append(r.get(field))
        details[key] = by_role
    _busiest(details, [r.get("busy") for r in reports])


def _busiest(details, fractions) -> None:
    """The largest of the busy ``fractions`` known, and whether it makes the run generator-bound."""
    known = [f for f in fractions if f is not None]
    details["busiest_generator"] = max(known) if known else None
    details["generator_bound"] = bool(known) and max(known) >= GENERATOR_BOUND


def _busiest_figure(result) -> None:
    busiest = result["details"].get("busiest_generator")
    _figure(result, "busiest generator CPU", None if busiest is None else 100.0 * busiest, "pct")


def _check_text(got: int, want: int, what: str) -> str:
    if got == want:
        return "%s/%s %s ok" % (format(got, ","), format(want, ","), what)
    if got < want:
        return "%s/%s %s MISSING %s" % (format(got, ","), format(want, ","), what, format(want - got, ","))
    return "%s/%s %s EXTRA %s" % (format(got, ","), format(want, ","), what, format(got - want, ","))


# -- publish/subscribe ---------------------------------------------------------------


class Side(NamedTuple):
    """The publishers or the subscribers of a publish/subscribe run."""
    target: object   # the worker function (pubsub.publisher, mqttpubsub.subscriber ...)
    opts: dict       # its options (``_worker_opts``, ``_mqtt_opts``)
    subject: bytes   # the subject or topic it publishes to or subscribes to


def _nats_side(target, server, cfg, tag: str, queue: bool = False) -> Side:
    opts = _worker_opts(server, cfg)
    if queue:
        opts["queue_group"] = b"bench-queue"
    return Side(target, opts, ("%s.%s" % (cfg.subject, tag.split("-")[0])).encode())


class InFlightMemory:
    """The server's RSS beside the messages in flight, read at each look of
    the coordinator at a publish/subscribe run (nothing without the server's
    pid): the RSS at the start, its peak growth and the most messages in flight."""

    def __init__(self, pid):
        self.pid = pid
        self.start = system.rss_bytes(pid) if pid else None
        self.peak_growth = 0
        self.peak_in_flight = 0

    def sample(self, in_flight: int) -> None:
        rss = system.rss_bytes(self.pid) if self.start is not None else None
        if rss is not None:
            self.peak_growth = max(self.peak_growth, rss - self.start)
            self.peak_in_flight = max(self.peak_in_flight, in_flight)

    def details(self) -> dict:
        known = self.start is not None
        return {"server_rss_start": self.start,
                "server_rss_peak_growth": self.peak_growth if known else None,
                "peak_in_flight": self.peak_in_flight if known else None,
                "rss_per_in_flight": (self.peak_growth / float(self.peak_in_flight)
                                      if known and self.peak_in_flight else None)}


def _in_flight(counters, subs: int, pubs: int, queue: bool) -> int:
    """Messages published so far that the slowest subscriber has not got
    (for a queue group: that the group has not got); a message fanned out
    to several subscribers counts once."""
    published = sum(counters[subs:subs + pubs])
    got = sum(counters[:subs]) if queue else min(counters[:subs])
    return max(0, published - got)


def _measure_pubsub(server, cfg, progress, size, pubs, subs, queue, tag, pub=None, sub=None, total=None) -> dict:
    """One publish/subscribe run; returns its raw measurement. The sides
    default to NATS publishers and subscribers on <--subject>.<tag>;
    ``total`` to --msgs (either within --max-bytes)."""
    pub = pub or _nats_side(pubsub.publisher, server, cfg, tag)
    sub = sub or _nats_side(pubsub.subscriber, server, cfg, tag, queue)
    total = messages(cfg, total or cfg.msgs, size)
    expected_total = total if queue else total * subs
    workers = launch.Workers(launch.context(cfg.start_method), pubs + subs, pubs + subs + 1)
    errors = []
    cpu_before = cpu_after = None
    memory = InFlightMemory(None)
    try:
        for i in range(subs):
            workers.start(sub.target, i, sub.opts, sub.subject, size, None if queue else total,
                          workers.barrier, workers.stop, workers.counters, workers.results)
        for j, share in enumerate(_shares(total, pubs)):
            workers.start(pub.target, subs + j, pub.opts, pub.subject, size, share,
                          workers.barrier, workers.stop, workers.counters, workers.results)
        if not workers.wait_ready(cfg.setup_timeout + 5):
            errors.append("workers did not get ready (setup failed or timed out)")
        else:
            cpu_before = system.cpu_seconds(server.pid) if server.pid else None
            memory = InFlightMemory(server.pid)
            _watch_pubsub(workers, cfg, progress, tag, size, subs, pubs, expected_total, queue, memory)
            cpu_after = system.cpu_seconds(server.pid) if server.pid else None
        workers.gather(pubs + subs, cfg.timeout + cfg.setup_timeout + 5)
    finally:
        workers.finish()
    counters = list(workers.counters)
    reports = workers.reports
    pub_reports = [r for r in reports if r["role"] == "pub"]
    sub_reports = sorted((r for r in reports if r["role"] == "sub"), key=lambda r: r["slot"])
    for r in reports:
        errors.extend(r["errors"])
    if len(pub_reports) < pubs or len(sub_reports) < subs:
        errors.append("%d of %d workers did not report" % (pubs + subs - len(reports), pubs + subs))
    starts = [r["start"] for r in pub_reports if r["start"] is not None]
    start = min(starts) if starts else None
    pub_ends = [r["end"] or r["sent_end"] for r in pub_reports if (r["end"] or r["sent_end"])]
    published = sum(r["sent"] for r in pub_reports)
    received_each = [r["received"] for r in sub_reports] or counters[:subs]
    received = sum(received_each)
    other = sum(r.get("other", 0) for r in sub_reports)
    lasts = [r["last"] for r in sub_reports if r["last"] is not None]
    elapsed = (max(lasts) - start) if (lasts and start is not None) else None
    pub_elapsed = (max(pub_ends) - start) if (pub_ends and start is not None) else None
    per_sub_rates = [stats.rate(r["received"], (r["last"] - start) if (r["last"] and start) else None)
                     for r in sub_reports]
    if other:
        errors.append("%d frames of an unexpected shape" % other)
    if published != total:
        errors.append("published %d of %d messages" % (published, total))
    measured = {
        "publishers": pubs, "subscribers": subs, "queue_group": queue, "messages": total,
        "published": published, "expected": expected_total, "received": received,
        "received_per_subscriber": received_each, "unexpected_frames": other,
        "elapsed_s": elapsed, "publish_elapsed_s": pub_elapsed,
        "pub_msgs_per_s": stats.rate(published, pub_elapsed),
        "pub_mb_per_s": stats.rate(published * size, pub_elapsed) / stats.MB,
        "sub_msgs_per_s": stats.rate(received, elapsed),
        "sub_mb_per_s": stats.rate(received * size, elapsed) / stats.MB,
        "per_sub_msgs_per_s": per_sub_rates,
        # Who was busy: the server's CPU seconds over the run (from the
        # barrier to the last report) and each worker's (``_generators``).
        "server_cpu_s": (cpu_after - cpu_before) if (cpu_before is not None and cpu_after is not None) else None,
        "errors": errors,
    }
    _generators(measured, reports)
    measured.update(memory.details())
    if any("acked" in r for r in pub_reports):  # QoS 1: the PUBACKs
        acked = sum(r.get("acked", 0) for r in pub_reports)
        measured.update(acked=acked, window=[r.get("window") for r in pub_reports])
        if acked != total:
            errors.append("%d of %d PUBLISHes acknowledged" % (acked, total))
        elif received < expected_total:
            errors.append("%d messages acknowledged to the publisher did not reach the subscribers: the server "
                          "dropped them (a subscriber's queue full?)" % (expected_total - received))
    measured["complete"] = received == expected_total and not errors
    return measured


def _watch_pubsub(workers, cfg, progress, tag, size, subs, pubs, expected_total, queue, memory):
    """Show progress and sample ``memory`` until every subscriber has
    reported; stop queue members once the group has everything, and everyone
    after --timeout of silence."""
    counters = workers.counters
    prefix = "[%s %s] " % (tag, size_text(size))
    now = time.monotonic()
    deadline = now + cfg.max_time + cfg.timeout + 10
    last_total, last_change = -1, now
    for _ in range(int((cfg.max_time + cfg.timeout + 20) / _WATCH_POLL) + 10):
        workers.poll(_WATCH_POLL)
        memory.sample(_in_flight(counters, subs, pubs, queue))
        now = time.monotonic()
        received = sum(counters[:subs])
        if received != last_total:
            last_total, last_change = received, now
        progress.update(prefix + "%s/%s received" % (format(received, ","), format(expected_total, ",")))
        if workers.count("sub") >= subs:
            break
        if queue and received >= expected_total:
            workers.stop.set()
        if workers.count("pub") >= pubs and now - last_change > cfg.timeout:
            workers.stop.set()
        if now > deadline or workers.all_exited():
            break
    received = sum(counters[:subs])
    progress.update(prefix + "%s/%s received" % (format(received, ","), format(expected_total, ",")), force=True)
    if received < expected_total:
        workers.stop.set()  # the subscribers gave up: publishers need not go on


def _pubsub(result, server, cfg, progress, size, pubs, subs, queue, pub=None, sub=None, total=None):
    m = _measure_pubsub(server, cfg, progress, size, pubs, subs, queue, result["label"], pub, sub, total)
    result["details"] = m
    result["errors"].extend(m["errors"])
    acked = "acked" in m
    _figure(result, "publish msgs/s (PUBACK received)" if acked else "publish msgs/s", m["pub_msgs_per_s"], "rate")
    _figure(result, "publish MB/s", m["pub_mb_per_s"], "mbps")
    _figure(result, "receive msgs/s", m["sub_msgs_per_s"], "rate")
    _figure(result, "receive MB/s", m["sub_mb_per_s"], "mbps")
    if subs > 1:
        rates = m["per_sub_msgs_per_s"]
        name = "per member msgs/s (avg)" if queue else "per subscriber msgs/s (avg)"
        _figure(result, name, (sum(rates) / len(rates)) if rates else 0.0, "rate")
    if queue:
        spread = stats.spread(m["received_per_subscriber"])
        m["spread"] = spread
        _figure(result, "received per member", " ".join(format(c, ",") for c in m["received_per_subscriber"]), "text")
        _figure(result, "member spread (max-min)/mean", spread["spread_pct"], "pct")
    if size >= MEMORY_FIGURES_FROM:
        growth = m["server_rss_peak_growth"]
        per = m["rss_per_in_flight"]
        _figure(result, "server RSS growth MB (peak)", None if growth is None else growth / stats.MB, "mb")
        _figure(result, "RSS per in-flight msg KiB", None if per is None else per / 1024.0, "kib")
    _busiest_figure(result)
    result["check"] = _check_text(m["received"], m["expected"], "received")
    if acked and m["acked"] != m["published"]:
        result["check"] += ", %s/%s acked" % (format(m["acked"], ","), format(m["published"], ","))
    result["complete"] = m["complete"]


def _hold_subscriptions(server, cfg, count: int, subject_prefix: str):
    """One extra connection holding ``count`` subscriptions on distinct unused
    subjects ``<prefix>.many.<i>``. Returns (socket, seconds it took)."""
    sock = protocol.connect(server.host, server.port, timeout=cfg.setup_timeout)
    started = time.monotonic()
    try:
        lines = b"".join(b"SUB %s.many.%d %d\r\n" % (subject_prefix.encode(), i, i + 1) for i in range(count))
        protocol.handshake(sock, lines, timeout=cfg.setup_timeout + count / 1000.0)
    except Exception:
        sock.close()
        raise
    return sock, time.monotonic() - started


def _manysubs(result, server, cfg, progress, size):
    runs = {}
    for extra in (BASE_EXTRA_SUBSCRIPTIONS, cfg.many_subscriptions):
        progress.update("[%s %s] placing %s subscriptions" % (result["label"], size_text(size), format(extra, ",")), force=True)
        holder, setup_s = _hold_subscriptions(server, cfg, extra, cfg.subject)
        try:
            m = _measure_pubsub(server, cfg, progress, size, 1, 1, False, result["label"] + "+%d" % extra)
        finally:
            holder.close()
        m["extra_subscriptions"] = extra
        m["subscribe_s"] = setup_s
        runs[extra] = m
        result["errors"].extend("with %d extra subscriptions: %s" % (extra, e) for e in m["errors"])
    base, many = runs[BASE_EXTRA_SUBSCRIPTIONS], runs[cfg.many_subscriptions]
    ratio = (many["sub_msgs_per_s"] / base["sub_msgs_per_s"]) if base["sub_msgs_per_s"] else 0.0
    result["details"] = {"base": base, "many": many, "ratio": ratio}
    _busiest(result["details"], [base["busiest_generator"], many["busiest_generator"]])
    _figure(result, "receive msgs/s, %s extra subs" % format(BASE_EXTRA_SUBSCRIPTIONS, ","), base["sub_msgs_per_s"], "rate")
    _figure(result, "receive msgs/s, %s extra subs" % format(cfg.many_subscriptions, ","), many["sub_msgs_per_s"], "rate")
    _figure(result, "rate ratio %s/%s subs" % (format(cfg.many_subscriptions, ","), BASE_EXTRA_SUBSCRIPTIONS), ratio, "ratio")
    _figure(result, "time to place %s SUBs (s)" % format(cfg.many_subscriptions, ","), many["subscribe_s"], "sec")
    _busiest_figure(result)
    got = base["received"] + many["received"]
    want = base["expected"] + many["expected"]
    result["check"] = _check_text(got, want, "received")
    result["complete"] = base["complete"] and many["complete"]


# -- MQTT -------------------------------------------------------------------------------


def _mqtt_topic(cfg, name: str) -> bytes:
    """<--subject>/<scenario> as MQTT writes it (bench/mqtt-qos0): the topic
    FlowMQ gives NATS subject <--subject>.<scenario>."""
    return subject_to_topic("%s.%s" % (cfg.subject, name)).encode("utf-8")


def _mqtt_pubsub(result, server, cfg, progress, size, subs, qos):
    """1 MQTT publisher -> ``subs`` MQTT subscribers, all at ``qos``."""
    opts = _mqtt_opts(server, cfg, qos)
    topic = _mqtt_topic(cfg, result["scenario"])
    _pubsub(result, server, cfg, progress, size, 1, subs, False, Side(mqttpubsub.publisher, opts, topic),
            Side(mqttpubsub.subscriber, opts, topic), cfg.mqtt_qos1_msgs if qos else cfg.mqtt_msgs)


def _nats_to_mqtt(result, server, cfg, progress, size):
    """A NATS publisher on <--subject>.nats-to-mqtt -> an MQTT subscriber at
    QoS 0 on that subject's topic: the message crosses the protocols."""
    subject = "%s.nats-to-mqtt" % cfg.subject
    _pubsub(result, server, cfg, progress, size, 1, 1, False,
            Side(pubsub.publisher, _worker_opts(server, cfg), subject.encode()),
            Side(mqttpubsub.subscriber, _mqtt_opts(server, cfg, 0), _mqtt_topic(cfg, "nats-to-mqtt")),
            cfg.mqtt_msgs)


# -- request-reply --------------------------------------------------------------------


def _reqrep(result, server, cfg, progress, size):
    requesters, responders = cfg.requesters, cfg.responders
    subject = ("%s.reqrep" % cfg.subject).encode()
    total = messages(cfg, cfg.requests, size)
    workers = launch.Workers(launch.context(cfg.start_method), requesters + responders,
                             requesters + responders + 1)
    opts = _worker_opts(server, cfg)
    errors = result["errors"]
    prefix = "[%s %s] " % (result["label"], size_text(size))
    try:
        for i in range(responders):
            workers.start(reqrep.responder, i, opts, subject, b"bench-responders",
                          workers.barrier, workers.stop, workers.counters, workers.results)
        for j, share in enumerate(_shares(total, requesters)):
            workers.start(reqrep.requester, responders + j, opts, subject, size, share,
                          workers.barrier, workers.counters, workers.results)
        if not workers.wait_ready(cfg.setup_timeout + 5):
            errors.append("workers did not get ready (setup failed or timed out)")
        else:
            deadline = time.monotonic() + cfg.max_time + cfg.timeout + 10
            for _ in range(int((cfg.max_time + cfg.timeout + 20) / 0.1) + 10):
                workers.poll(0.1)
                done = sum(workers.counters[responders:])
                progress.update(prefix + "%s/%s answered" % (format(done, ","), format(total, ",")))
                if workers.count("req") >= requesters or time.monotonic() > deadline or workers.all_exited():
                    break
        workers.stop.set()
        workers.gather(requesters + responders, cfg.setup_timeout + 5)
    finally:
        workers.finish()
    reports = workers.reports
    for r in reports:
        errors.extend(r["errors"])
    req = [r for r in reports if r["role"] == "req"]
    rep = [r for r in reports if r["role"] == "rep"]
    if len(req) < requesters or len(rep) < responders:
        errors.append("%d of %d workers did not report" % (requesters + responders - len(reports),
                                                             requesters + responders))
    latencies = array.array("d")
    for r in req:
        latencies.frombytes(r["latencies"])
    answered = sum(r["answered"] for r in req)
    served = sum(r["answered"] for r in rep)
    starts = [r["start"] for r in req if r["start"] is not None]
    ends = [r["end"] for r in req if r["end"] is not None]
    elapsed = (max(ends) - min(starts)) if (starts and ends) else None
    summary = stats.latency_summary(latencies)
    if served != answered:
        errors.append("responders sent %d replies, requesters got %d" % (served, answered))
    late = sum(r["late"] for r in req)
    if late:
        errors.append("%d replies came too late or did not match" % late)
    result["details"] = {"requesters": requesters, "responders": responders, "requests": total,
                         "answered": answered, "responder_replies": served,
                         "replies_per_responder": [r["answered"] for r in sorted(rep, key=lambda r: r["slot"])],
                         "late_replies": late, "elapsed_s": elapsed,
                         "requests_per_s": stats.rate(answered, elapsed), "latency": summary}
    _generators(result["details"], reports)
    _figure(result, "requests/s", stats.rate(answered, elapsed), "rate")
    _figure(result, "latency p50 (us)", summary["p50_us"], "us")
    _figure(result, "latency p90 (us)", summary["p90_us"], "us")
    _figure(result, "latency p99 (us)", summary["p99_us"], "us")
    _figure(result, "latency max (us)", summary["max_us"], "us")
    _busiest_figure(result)
    result["check"] = _check_text(answered, total, "answered")
    result["complete"] = answered == total and not errors


# -- idle connections ---------------------------------------------------------------------


def _idle(result, server, cfg, progress):
    total = cfg.idle_connections
    # Each worker holds its share of the sockets: stay under its descriptor limit.
    soft = system.raise_fd_limit()[0] or 1024
    per_worker = max(100, soft - 64)
    nworkers = max(1, min(total, max(cfg.idle_workers, -(-total // per_worker))))
    prefix = "[%s] " % result["label"]
    errors = result["errors"]
    workers = launch.Workers(launch.context(cfg.start_method), nworkers)
    opts = _worker_opts(server, cfg)
    rss_before = system.rss_bytes(server.pid) if server.pid else None
    rss_after = None
    try:
        for i, share in enumerate(_shares(total, nworkers)):
            workers.start(idle.holder, i, opts, share, workers.stop, workers.counters, workers.results)
        deadline = time.monotonic() + cfg.max_time + 10
        for _ in range(int((cfg.max_time + 20) / 0.1) + 10):
            workers.poll(0.1)
            progress.update(prefix + "%s/%s connected" % (format(sum(workers.counters[:nworkers]), ","),
                                                          format(total, ",")))
            if workers.count("idle") >= nworkers or time.monotonic() > deadline or workers.all_exited():
                break
        time.sleep(cfg.settle)
        if server.pid:
            rss_after = system.rss_bytes(server.pid)
    finally:
        workers.finish()
    opened = sum(r["opened"] for r in workers.reports)
    for r in workers.reports:
        errors.extend(r["errors"])
    if workers.count("idle") < nworkers:
        errors.append("%d of %d workers did not report" % (nworkers - workers.count("idle"), nworkers))
    details = {"connections": total, "opened": opened, "workers": nworkers,
               "server_pid": server.pid, "rss_before": rss_before, "rss_after": rss_after}
    result["details"] = details
    _figure(result, "connections open", opened, "count")
    if rss_before is not None and rss_after is not None:
        increase = rss_after - rss_before
        details["rss_increase"] = increase
        details["rss_per_connection"] = increase / float(opened) if opened else None
        _figure(result, "server RSS before (MB)", rss_before / stats.MB, "mb")
        _figure(result, "server RSS increase (MB)", increase / stats.MB, "mb")
        _figure(result, "RSS per connection (KiB)", (increase / 1024.0 / opened) if opened else 0.0, "kib")
    else:
        _figure(result, "RSS per connection (KiB)", "n/a (server pid unknown)", "text")
    result["check"] = _check_text(opened, total, "connected")
    result["complete"] = opened == total and not errors


# -- JetStream ------------------------------------------------------------------------------


def _js_subject(cfg, name: str) -> str:
    return "%s.js.%s" % (cfg.subject, name[3:])  # bench.js.pub-sync ...


def _js_stream(result, api, name: str, subject: str, progress, prefix: str) -> None:
    progress.update(prefix + "creating stream %s" % name, force=True)
    info = api.fresh_stream(name, subject)
    result["details"]["stream"] = {"name": name, "subject": subject, "storage": info.get("config", {}).get("storage")}


def _js_stored(result, api, name: str, want: int) -> None:
    """The stream must hold exactly the messages published, seq 1..want."""
    state = api.stream_info(name).get("state", {})
    result["details"]["stream_state"] = state
    got = (state.get("messages"), state.get("first_seq"), state.get("last_seq"))
    if got != (want, 1 if want else 0, want):
        result["errors"].append("stream %s holds %s messages, seq %s..%s; expected %d, seq 1..%d"
                                % (name, got[0], got[1], got[2], want, want))


def _js_drop(result, api, name: str) -> None:
    try:
        api.delete_stream(name)
    except (OSError, protocol.BenchError) as e:
        result["errors"].append("deleting stream %s: %s" % (name, e))


def _js_worker(result, server, cfg, progress, prefix: str, target, args, total: int, what: str):
    """Run one worker process of a JetStream scenario; returns its report (or None)."""
    errors = result["errors"]
    workers = launch.Workers(launch.context(cfg.start_method), 1, 2)
    opts = _worker_opts(server, cfg)
    try:
        workers.start(target, 0, opts, *(tuple(args) + (workers.barrier, workers.stop,
                                                        workers.counters, workers.results)))
        if not workers.wait_ready(cfg.setup_timeout + 5):
            errors.append("the worker did not get ready (setup failed or timed out)")
        else:
            deadline = time.monotonic() + cfg.max_time + cfg.timeout + 10
            for _ in range(int((cfg.max_time + cfg.timeout + 20) / 0.1) + 10):
                workers.poll(0.1)
                progress.update(prefix + "%s/%s %s" % (format(workers.counters[0], ","), format(total, ","), what))
                if workers.reports or time.monotonic() > deadline or workers.all_exited():
                    break
        workers.gather(1, cfg.timeout + cfg.setup_timeout + 5)
    finally:
        workers.finish()
    for r in workers.reports:
        errors.extend(r["errors"])
    if not workers.reports:
        errors.append("the worker did not report")
        return None
    return workers.reports[0]


def _js_publish(result, server, cfg, progress, size, window):
    """js-pub-sync (``window`` None: one PubAck awaited at a time) or js-pub-async."""
    name = JS_STREAMS[result["scenario"]]
    subject = _js_subject(cfg, result["scenario"])
    total = messages(cfg, cfg.js_sync_msgs if window is None else cfg.js_msgs, size)
    prefix = "[%s %s] " % (result["label"], size_text(size))
    details = result["details"]
    details.update(messages=total, window=window or 1)
    r = None
    api = jetstream.JsApi(server.host, server.port, cfg.setup_timeout)
    try:
        _js_stream(result, api, name, subject, progress, prefix)
        try:
            if window is None:
                target, args = jetstream.sync_publisher, (subject.encode(), size, total)
            else:
                target, args = jetstream.async_publisher, (subject.encode(), size, total, window)
            r = _js_worker(result, server, cfg, progress, prefix, target, args, total, "acked")
            if r is not None and r["acked"] == total:
                _js_stored(result, api, name, total)
        finally:
            _js_drop(result, api, name)
    finally:
        api.close()
    r = r or {}
    acked = r.get("acked", 0)
    in_order = r.get("acked_in_order", 0)
    elapsed = (r["end"] - r["start"]) if (r.get("end") and r.get("start")) else None
    details.update({k: v for k, v in r.items() if k not in ("latencies", "errors", "role", "slot")})
    details["elapsed_s"] = elapsed
    details["msgs_per_s"] = stats.rate(acked, elapsed)
    _figure(result, "publish msgs/s (PubAck received)", stats.rate(acked, elapsed), "rate")
    _figure(result, "publish MB/s", stats.rate(acked * size, elapsed) / stats.MB, "mbps")
    if window is None:
        latencies = array.array("d")
        latencies.frombytes(r.get("latencies", b""))
        summary = stats.latency_summary(latencies)
        details["latency"] = summary
        _figure(result, "PubAck latency p50 (us)", summary["p50_us"], "us")
        _figure(result, "PubAck latency p99 (us)", summary["p99_us"], "us")
    _generators(details, [r] if r else [])
    _busiest_figure(result)
    result["check"] = _check_text(in_order, total, "acked in order")
    result["complete"] = in_order == total and r.get("sent") == total and not result["errors"]


def _js_pull(result, server, cfg, progress, size):
    name = JS_STREAMS["js-pull"]
    subject = _js_subject(cfg, "js-pull")
    total = messages(cfg, cfg.js_msgs, size)
    prefix = "[%s %s] " % (result["label"], size_text(size))
    details = result["details"]
    details.update(messages=total, batch=cfg.js_batch, ack_policy="explicit", consumer=JS_CONSUMER)
    r = None
    api = jetstream.JsApi(server.host, server.port, cfg.setup_timeout)
    try:
        _js_stream(result, api, name, subject, progress, prefix)
        try:
            details["prefill"] = _js_prefill(result, server, cfg, progress, prefix, subject, size, total)
            if not result["errors"]:
                _js_stored(result, api, name, total)
            if not result["errors"]:
                api.create_consumer(name, JS_CONSUMER)
                r = _js_worker(result, server, cfg, progress, prefix, jetstream.puller,
                               (name, JS_CONSUMER, size, total, cfg.js_batch), total, "consumed")
                if r is not None:
                    details["consumer_state"] = _js_acked(result, api, name, total, cfg.timeout)
        finally:
            _js_drop(result, api, name)
    finally:
        api.close()
    r = r or {}
    received = r.get("received", 0)
    elapsed = (r["end"] - r["start"]) if (r.get("end") and r.get("start")) else None
    details.update({k: v for k, v in r.items() if k not in ("errors", "role", "slot")})
    details["elapsed_s"] = elapsed
    details["msgs_per_s"] = stats.rate(received, elapsed)
    _figure(result, "consume msgs/s (each acked)", stats.rate(received, elapsed), "rate")
    _figure(result, "consume MB/s", stats.rate(received * size, elapsed) / stats.MB, "mbps")
    _generators(details, [r] if r else [])
    _busiest_figure(result)
    result["check"] = _check_text(received, total, "consumed")
    result["complete"] = received == total and not result["errors"]


def _js_prefill(result, server, cfg, progress, prefix, subject, size, total) -> dict:
    """Fill the stream of js-pull (not timed), published like js-pub-async."""
    sock = protocol.connect(server.host, server.port, cfg.setup_timeout)
    try:
        inbox = jetstream.new_inbox("fill")
        parser = protocol.handshake(sock, protocol.sub_line(inbox + b".*", b"1"), cfg.setup_timeout,
                                    connect=protocol.JS_CONNECT)
        scanner = jetstream.AckScanner(total)
        early = parser.rest()
        if early:
            sock.sendall(scanner.feed(early))
        timing = jetstream.publish_window(
            sock, scanner, subject.encode(), inbox, size, cfg.js_window, cfg.batch_bytes, cfg.timeout,
            time.monotonic() + cfg.max_time,
            lambda done: progress.update(prefix + "prefill %s/%s acked" % (format(done, ","), format(total, ","))))
    except (OSError, protocol.BenchError) as e:
        result["errors"].append("prefill: %s" % (e,))
        return {}
    finally:
        sock.close()
    result["errors"].extend("prefill: %s" % p for p in scanner.problems())
    if scanner.in_order != total:
        result["errors"].append("prefill: %d of %d messages acked in order" % (scanner.in_order, total))
    elapsed = (timing["last_ack"] - timing["start"]) if timing["last_ack"] else None
    return {"acked": scanner.acked, "elapsed_s": elapsed, "msgs_per_s": stats.rate(scanner.acked, elapsed)}


def _js_acked(result, api, name: str, total: int, timeout: float) -> dict:
    """After the run the consumer must have every message acknowledged: ack
    floor at ``total``, nothing pending. Acks are fire-and-forget, so this
    asks again for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    info = {}
    for _ in range(int(timeout / 0.05) + 2):
        info = api.consumer_info(name, JS_CONSUMER)
        floor = info.get("ack_floor", {}).get("stream_seq")
        if floor == total and not info.get("num_ack_pending") and not info.get("num_pending"):
            break
        if time.monotonic() > deadline:
            result["errors"].append("consumer %s: ack floor %s of %d, %s acks pending, %s messages pending"
                                    % (JS_CONSUMER, floor, total, info.get("num_ack_pending"), info.get("num_pending")))
            break
        time.sleep(0.05)
    return {k: info.get(k) for k in ("delivered", "ack_floor", "num_ack_pending", "num_redelivered",
                                     "num_pending", "num_waiting")}


def deep_subject_sets(prefix: str, count: int, tokens: int = JS_CREATE_TOKENS) -> list:
    """js-create's subject lists, ``count`` subjects of ``tokens`` tokens in
    three shapes, none of which overlaps another subject of its list:
    distinct from their second token on (many deep branches), sharing all
    but the last token, and every other token a ``*``."""
    fill = tokens - prefix.count(".") - 3  # prefix, shape, the body, the subject's own number
    shared = ".".join("t%d" % j for j in range(fill))
    starred = ".".join("*" if j % 2 else "t%d" % j for j in range(fill))
    return [
        ("distinct", ["%s.distinct.n%d.%s" % (prefix, i, shared) for i in range(count)]),
        ("shared prefix", ["%s.shared.%s.n%d" % (prefix, shared, i) for i in range(count)]),
        ("wildcards", ["%s.wild.%s.n%d" % (prefix, starred, i) for i in range(count)]),
    ]


def _js_create(result, server, cfg, progress):
    """STREAM.CREATE of a memory stream with --js-create-subjects deep
    subjects, per shape: the time to the answer (the server checks the
    subjects for overlaps and subscribes to them), then STREAM.DELETE."""
    name = JS_STREAMS["js-create"]
    prefix = "[%s] " % result["label"]
    created = 0
    sets = deep_subject_sets(_js_subject(cfg, "js-create"), cfg.js_create_subjects)
    details = result["details"]
    details.update(subjects=cfg.js_create_subjects, tokens=JS_CREATE_TOKENS)
    api = jetstream.JsApi(server.host, server.port, max(cfg.setup_timeout, 120.0))
    try:
        for shape, subjects in sets:
            progress.update(prefix + "creating a stream of %s subjects (%s)" % (format(len(subjects), ","), shape),
                            force=True)
            api.delete_stream(name, missing_ok=True)
            started = time.perf_counter()
            info = api.request("$JS.API.STREAM.CREATE.%s" % name,
                               {"name": name, "subjects": subjects, "storage": "memory"})
            elapsed = time.perf_counter() - started
            if len(info.get("config", {}).get("subjects", ())) == len(subjects):
                created += 1
            else:
                result["errors"].append("%s: the stream has %s subjects, not %d"
                                        % (shape, len(info.get("config", {}).get("subjects", ())), len(subjects)))
            _figure(result, "STREAM.CREATE, %s (ms)" % shape, elapsed * 1000.0, "ms")
            details[shape] = {"seconds": elapsed, "request_bytes": len(json.dumps(subjects))}
            _js_drop(result, api, name)
    finally:
        api.close()
    result["check"] = _check_text(created, len(sets), "streams created")
    result["complete"] = created == len(sets) and not result["errors"]
