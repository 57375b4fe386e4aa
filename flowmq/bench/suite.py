"""Runs the chosen scenarios against each server, one server after the other:
FlowMQ (started here, or the one at --url), then with --compare the
reference servers of the protocols chosen: nats-server for the NATS
scenarios, mosquitto for the MQTT ones (each only if a chosen scenario is
its protocol's; nats-to-mqtt runs on FlowMQ alone). A server the tool
starts is stopped when its scenarios are done. With --rounds all of it
runs again, each round with a newly started server.

Before each measured run of a throughput scenario, the same scenario runs once
unreported with a --warmup share of its messages (a quarter by default): a
JIT (PyPy's, FlowMQ's production runtime) compiles the paths a scenario
takes during its first second, which in a run of two seconds would be
measured as part of the throughput. nats-server and mosquitto, compiled
ahead of time, get the same warm-up. ``--warmup 0`` measures cold."""

from __future__ import annotations

import copy
import time

from flowmq.bench import protocol, rounds, scenarios, servers


def plan(cfg) -> list:
    """(scenario, size) pairs in the order they run. ``idle`` runs first so
    that it measures a fresh server (memory freed by earlier runs would be
    reused by the new connections and hide their cost)."""
    names = [n for n in scenarios.NAMES if n in cfg.scenarios]
    if "idle" in names:
        names.remove("idle")
        names.insert(0, "idle")
    steps = []
    for name in names:
        if name in scenarios.SIZED:
            steps.extend((name, size) for size in cfg.sizes)
        elif name == "reqrep":
            steps.append((name, cfg.sizes[0]))
        else:
            steps.append((name, None))
    return steps


def server_factories(cfg, steps) -> list:
    """(callable that gives a running Server, the steps it runs) per server:
    the server under test runs them all, a reference server those of its
    protocol that it can run."""
    if cfg.url:
        factories = [(lambda: servers.external(cfg.url, cfg.server_pid, cfg.mqtt_url), steps)]
    else:
        factories = [(lambda: servers.start_flowmq(cfg.flowmq_args, cfg.flowmq_python, max(cfg.sizes)), steps)]
    if cfg.compare:
        nats = [step for step in steps if scenarios.needs(step[0]) == {"nats"}]
        mqtt = [step for step in steps if scenarios.needs(step[0]) == {"mqtt"}]
        # Fail before any run if one is missing.
        if nats:
            servers.find_nats_server()
            factories.append((lambda: servers.start_nats_server(cfg.nats_server_args, jetstream=cfg.jetstream,
                                                                payload=max(cfg.sizes)), nats))
        if mqtt:
            servers.find_mosquitto()
            factories.append((servers.start_mosquitto, mqtt))
    return factories


def run(cfg, progress) -> list:
    """Returns [(server, results)] in server order; with ``--rounds`` N each
    server's results are the median of N rounds (``flowmq.bench.rounds``),
    the servers taking turns, every other round in the reverse order."""
    factories = server_factories(cfg, plan(cfg))
    done = [[] for _ in factories]  # per server: the results of each round
    servers_run = [None] * len(factories)
    for number in range(cfg.rounds):
        if cfg.rounds > 1:
            progress.note("flowmq-bench: round %d of %d" % (number + 1, cfg.rounds))
        order = list(range(len(factories)))
        if number % 2:
            order.reverse()
        for index in order:
            factory, steps = factories[index]
            servers_run[index], results = _run_server(cfg, progress, factory, steps)
            done[index].append(results)
    return [(server, rounds.merge_all(per_round)) for server, per_round in zip(servers_run, done)]


def _run_server(cfg, progress, factory, steps) -> tuple:
    """(server, results): ``steps`` run against the server that ``factory`` starts."""
    server = factory()
    try:
        progress.note("flowmq-bench: %s at %s%s" % (server.description, server.url,
                                                    " (pid %d)" % server.pid if server.pid else ""))
        results = []
        skip_js = _skip_jetstream(cfg, server, steps, progress)
        skip_mqtt = _skip_mqtt(cfg, server, steps, progress)
        warm = _warm_up_config(cfg)
        for name, size in steps:
            if (skip_js and name in scenarios.JS_NAMES) or (skip_mqtt and "mqtt" in scenarios.needs(name)):
                continue
            if warm is not None and name in scenarios.TRAFFIC:
                _warm_up(name, server, warm, size, progress)
            results.append(scenarios.run(name, server, cfg, size, progress))
            time.sleep(cfg.pause)
        if not server.alive():
            progress.note("flowmq-bench: %s exited during the run; log tail:\n%s"
                          % (server.kind, server.log_tail()))
    finally:
        server.stop()
    return server, results


def _warm_up_config(cfg):
    """The configuration of the warm-up runs: ``cfg`` with a --warmup share
    of each run length (at least one); None for --warmup 0."""
    if not cfg.warmup:
        return None
    warm = copy.copy(cfg)
    for length in scenarios.RUN_LENGTHS:
        setattr(warm, length, max(1, int(getattr(cfg, length) * cfg.warmup)))
    return warm


def _warm_up(name, server, warm, size, progress) -> None:
    """The unreported warm-up run of a scenario; said on its own line only
    when it failed (the measured run after it may then fail too)."""
    result = scenarios.run(name, server, warm, size, _WarmUpProgress(progress))
    if not result["complete"] or result["errors"]:
        progress.note("flowmq-bench: the warm-up run of %s %s on %s failed: %s" % (
            result["label"], scenarios.size_text(size), server.kind,
            "; ".join(result["errors"]) or result["check"]))
    time.sleep(warm.pause)


class _WarmUpProgress:
    """The progress line of a warm-up run, marked as one."""

    def __init__(self, progress):
        self._progress = progress

    def update(self, text: str, force: bool = False) -> None:
        self._progress.update("warm-up " + text, force)

    def clear(self) -> None:
        self._progress.clear()

    def note(self, text: str) -> None:
        self._progress.note(text)


def _skip_jetstream(cfg, server, steps, progress) -> bool:
    """The JetStream scenarios of the default run are left out for a server
    that does not announce JetStream in its INFO (a --url server without it);
    named with --scenario, they run and report what fails."""
    if cfg.scenarios_named or not any(name in scenarios.JS_NAMES for name, _ in steps):
        return False
    try:
        info = protocol.server_info(server.host, server.port, cfg.setup_timeout)
    except (OSError, protocol.BenchError):
        return False  # the scenarios will say what is wrong
    if info.get("jetstream"):
        return False
    progress.note("flowmq-bench: %s does not announce JetStream; the js-* scenarios are left out" % server.kind)
    return True


def _skip_mqtt(cfg, server, steps, progress) -> bool:
    """The MQTT scenarios of the default run are left out for a --url server
    without --mqtt-url; named with --scenario, they run and say so."""
    if cfg.scenarios_named or "mqtt" in server.protocols or not any("mqtt" in scenarios.needs(name)
                                                                    for name, _ in steps):
        return False
    progress.note("flowmq-bench: no --mqtt-url for %s; the MQTT scenarios are left out" % server.kind)
    return True
