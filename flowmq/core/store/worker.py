"""DiskWorker: the storage engine's slow file work, off the reactor thread.

fsync, segment and tombstone rewrites and directory removals can take
milliseconds to seconds on a busy disk; run on the reactor thread they
would stop every connection for that long. The engine hands them to one
DiskWorker, which runs them **one at a time, in the order given**, in
Twisted's thread pool (``deferToThreadPool`` with the pool and the reactor
injected), and answers with a Deferred that fires on the reactor thread.
One job at a time keeps the order simple to reason about (an fsync
submitted after a rewrite runs after it) and leaves the other pool threads
to whoever else uses them; the engine merges the fsyncs that wait into one
job (group commit), so one lane is enough.

A job must only touch what the reactor thread leaves alone while it runs:
paths, bytes and numbers copied for it, never a store's index or buffers.

Without a thread pool (tools, unit tests of the stores) a job runs at once
on the caller's thread and its Deferred has fired on return: the same code
paths, synchronously.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool


class DiskWorker:
    """Runs jobs in order, one at a time, in ``threadpool`` (None: inline)."""

    def __init__(self, reactor=None, threadpool=None):
        if (reactor is None) != (threadpool is None):
            raise ValueError("a DiskWorker needs both a reactor and a thread pool, or neither")
        self._reactor = reactor
        self._pool = threadpool
        self._queue: deque = deque()  # (function, args, Deferred) not started yet
        self._busy = False
        self._idle: list = []  # Deferreds waiting for the queue to drain

    def run(self, function, *args) -> Deferred:
        """Run ``function(*args)`` after the jobs before it; a Deferred of its result."""
        if self._pool is None:
            return maybeDeferred(function, *args)
        done = Deferred()
        self._queue.append((function, args, done))
        if not self._busy:
            self._next()
        return done

    def _next(self) -> None:
        if not self._queue:
            self._busy = False
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)
            return
        self._busy = True
        function, args, done = self._queue.popleft()
        deferToThreadPool(self._reactor, self._pool, function, *args).addBoth(self._finished, done)

    def _finished(self, result, done: Deferred) -> None:
        done.callback(result)  # a Failure goes down the errback chain
        self._next()

    def idle(self) -> Deferred:
        """A Deferred that fires once every job submitted so far has run."""
        if not self._busy:
            return succeed(None)
        waiter = Deferred()
        self._idle.append(waiter)
        return waiter
