"""``flowmq-bench --store``: the storage engine's own figures, in process.

Three scenarios, each timed with time.perf_counter over operations on the
stores (no server, no sockets):

- ``delete``: a stream with a backlog of --store-backlog (1,000,000)
  messages on one topic, read by a filtered consumer (a work queue); then
  --store-deletes (20,000) deletes in random order (acks out of order):
  deletes/s.
- ``filters``: one log of 100,000 messages over 1,000 topics
  (``s/<n>/in``); next_message + count_pending with each of
  --store-filters (1,000) filters ``s/<n>/#`` in turn, and the same with 10
  filters for comparison: lookups/s.
- ``sweep``: --store-streams (1,000) file streams, idle since the last
  sweep; a compaction sweep and an interval sync sweep over them: µs each.

It also runs as a file against another tree's code (``PYTHONPATH=<tree>
python flowmq/bench/store.py``), for before/after figures: it only imports
``flowmq.core.store`` and copes with the engine's methods before they took
a kind.
"""

from __future__ import annotations

import argparse
import inspect
import random
import resource
import sys
import tempfile
import time

from twisted.internet.task import Clock

from flowmq.core.store import Limits, MemoryStore, StorageEngine

#: Most seconds one timed loop runs (then the rate is of what it did).
BUDGET = 10.0


def _timed(operations, budget: float = BUDGET):
    """Run the callables of ``operations`` in turn until done or the budget
    is spent; ``(count, seconds)``."""
    started = time.perf_counter()
    count = 0
    for operation in operations:
        operation()
        count += 1
        if not count % 64 and time.perf_counter() - started > budget:
            break
    return count, time.perf_counter() - started


def delete(backlog: int, deletes: int) -> dict:
    store = MemoryStore(Limits())
    for _ in range(backlog):
        store.append("q/jobs", None, b"job")
    store.count_pending(1, "q/#")  # a consumer's filter: its index is kept from now on
    seqs = random.Random(1).sample(range(1, backlog + 1), deletes)
    count, seconds = _timed(lambda seq=seq: store.delete(seq) for seq in seqs)
    assert store.state().messages == backlog - count
    return {"deletes/s": count / seconds, "deletes": count, "backlog": backlog}


def filters(filter_count: int, topics: int = 1000, rounds: int = 100, lookups: int = 20000) -> dict:
    store = MemoryStore(Limits())
    for _ in range(rounds):
        for n in range(topics):
            store.append("s/%d/in" % n, None, b"m")
    names = ["s/%d/#" % (n * topics // filter_count) for n in range(filter_count)]
    last = store.state().last_seq

    def lookup(k):
        topic_filter = names[k % filter_count]
        start = 1 + (k * 7919) % last
        store.next_message(start, topic_filter)
        store.count_pending(start, topic_filter)

    for k in range(filter_count):  # every filter seen once: the steady state is what is measured
        lookup(k)
    count, seconds = _timed(lambda k=k: lookup(k) for k in range(lookups))
    return {"lookups/s": count / seconds, "lookups": count, "filters": filter_count}


def _open(engine, name):
    if "kind" in inspect.signature(engine.open_stream).parameters:
        return engine.open_stream("jetstream", name, Limits())
    return engine.open_stream(name, Limits())  # the engine before streams had a kind


def sweep(streams: int, sweeps: int = 20) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * streams + 256)) if hard != resource.RLIM_INFINITY else 4 * streams + 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with tempfile.TemporaryDirectory(prefix="flowmq-bench-store-") as directory:
        clock = Clock()
        engine = StorageEngine(directory, fsync="interval", fsync_interval=1.0, clock=clock, compact_interval=60.0)
        for n in range(streams):
            _open(engine, "s%d" % n).append("t", None, b"x")
        engine.flush_all()
        engine._compact_all()  # everyone changed once; idle from now on
        engine._sync_all()
        compaction = _timed(engine._compact_all for _ in range(sweeps))
        syncs = _timed(engine._sync_all for _ in range(sweeps))
        engine.close()
    return {"compaction sweep µs": compaction[1] / compaction[0] * 1e6,
            "sync sweep µs": syncs[1] / syncs[0] * 1e6, "streams": streams}


def run(cfg, out=sys.stdout) -> list:
    """Run the scenarios; print one line each; return the figures."""
    results = []
    for name, function in (("delete", lambda: delete(cfg.store_backlog, cfg.store_deletes)),
                           ("filters", lambda: filters(cfg.store_filters)),
                           ("filters", lambda: filters(10)),
                           ("sweep", lambda: sweep(cfg.store_streams))):
        figures = function()
        results.append((name, figures))
        out.write("store %-8s %s\n" % (name, "  ".join(
            "%s %s" % (key, "{:,.1f}".format(value) if isinstance(value, float) else "{:,}".format(value))
            for key, value in figures.items())))
        out.flush()
    return results


def add_arguments(parser) -> None:
    parser.add_argument("--store-backlog", type=int, default=1000000, metavar="N",
                        help="--store: messages in the delete scenario's backlog (default 1,000,000)")
    parser.add_argument("--store-deletes", type=int, default=20000, metavar="N",
                        help="--store: out-of-order deletes (default 20,000)")
    parser.add_argument("--store-filters", type=int, default=1000, metavar="N",
                        help="--store: filters over one log (default 1,000; 10 is also run)")
    parser.add_argument("--store-streams", type=int, default=1000, metavar="N",
                        help="--store: idle file streams a sweep goes over (default 1,000)")


if __name__ == "__main__":
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(arguments)
    run(arguments.parse_args())
