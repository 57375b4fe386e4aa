"""Runs the chosen scenarios against each server, one server after the other:
FlowMQ (started here, or the one at --url), then nats-server with --compare.
A server the tool starts is stopped when its scenarios are done."""

from __future__ import annotations

import time

from flowmq.bench import scenarios, servers


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


def server_factories(cfg) -> list:
    """Callables that each give a running Server (started or external)."""
    factories = []
    if cfg.url:
        factories.append(lambda: servers.external(cfg.url, cfg.server_pid))
    else:
        factories.append(lambda: servers.start_flowmq(cfg.flowmq_args))
    if cfg.compare:
        servers.find_nats_server()  # fail before any run if it is missing
        factories.append(lambda: servers.start_nats_server(cfg.nats_server_args))
    return factories


def run(cfg, progress) -> list:
    """Returns [(server, results)] in server order."""
    runs = []
    steps = plan(cfg)
    for factory in server_factories(cfg):
        server = factory()
        try:
            progress.note("flowmq-bench: %s at %s%s" % (server.description, server.url,
                                                        " (pid %d)" % server.pid if server.pid else ""))
            results = []
            for name, size in steps:
                results.append(scenarios.run(name, server, cfg, size, progress))
                time.sleep(cfg.pause)
            if not server.alive():
                progress.note("flowmq-bench: %s exited during the run; log tail:\n%s"
                              % (server.kind, server.log_tail()))
        finally:
            server.stop()
        runs.append((server, results))
    return runs
