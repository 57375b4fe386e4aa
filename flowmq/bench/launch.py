"""Starting the worker processes of one run and gathering their reports.

Workers are ``multiprocessing`` processes (fork where the platform has it,
else spawn). They share a results queue (one dict per worker), a stop event,
an array of progress counters (one slot per worker) and, where timing must
start together, a barrier that the coordinator joins too.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
import threading
import time


def context(method=None):
    if method is None:
        method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


class Workers:
    def __init__(self, ctx, slots: int, barrier_parties: int = 0):
        self.ctx = ctx
        self.results = ctx.Queue()
        self.stop = ctx.Event()
        self.counters = ctx.RawArray("q", max(1, slots))
        self.barrier = ctx.Barrier(barrier_parties) if barrier_parties else None
        self.processes: list = []
        self.reports: list = []

    def start(self, target, *args) -> None:
        process = self.ctx.Process(target=target, args=args, daemon=True)
        process.start()
        self.processes.append(process)

    def wait_ready(self, timeout: float) -> bool:
        """Join the barrier as the coordinator; False if a worker failed to
        get ready (it aborted the barrier) or the timeout passed."""
        try:
            self.barrier.wait(timeout)
            return True
        except threading.BrokenBarrierError:
            return False

    def poll(self, timeout: float = 0.0) -> None:
        """Move what workers have reported so far into ``reports``."""
        end = time.monotonic() + timeout
        for _ in range(10000):
            try:
                remaining = end - time.monotonic()
                if remaining > 0:
                    report = self.results.get(timeout=remaining)
                else:
                    report = self.results.get_nowait()
            except queue.Empty:
                return
            self.reports.append(report)
            timeout = 0.0
            end = time.monotonic()

    def count(self, role: str) -> int:
        return sum(1 for r in self.reports if r.get("role") == role)

    def all_exited(self) -> bool:
        return all(p.exitcode is not None for p in self.processes)

    def gather(self, expected: int, timeout: float) -> list:
        """Wait up to ``timeout`` for ``expected`` reports in all."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1) + 2):
            if len(self.reports) >= expected:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.poll(min(0.1, remaining))
            if self.all_exited():
                self.poll(0.2)
                break
        return self.reports

    def finish(self, timeout: float = 10.0) -> None:
        """Stop every worker: set the stop event, join, terminate what is left."""
        self.stop.set()
        if self.barrier is not None:
            self.barrier.abort()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(2.0)
        self.poll()
        self.results.close()
        self.results.join_thread()
