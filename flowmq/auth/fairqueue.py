"""A fair line for slow work (bcrypt checks) in the reactor's thread pool.

Each source (a client address) waits in its own line, and the lines are
served round-robin, a few jobs at a time: a source that queues many jobs
delays another source's job by at most one of its own, not by all of them.
Each line and all lines together are bounded; a job that does not fit is
refused at once (``QueueFull``) rather than queued to time out. A waiting
job whose Deferred is cancelled (its client went away) leaves its line.
"""

from __future__ import annotations

import collections
import ipaddress

from twisted.internet import defer, threads
from twisted.python.failure import Failure


class QueueFull(Exception):
    """Too many jobs are already waiting (from this source, or in all)."""


def source_of(host: str) -> str:
    """The line a client address waits in: an IPv4 address, or an IPv6 /64
    (the block one IPv6 host is usually given, and can pick addresses from)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network((address, 64), strict=False))
    return str(address)


class FairQueue:
    """Runs ``function(*args)`` in threads, ``at_once`` at a time, serving the
    sources' lines in turn; at most ``per_source`` jobs wait per source and
    ``total`` in all. ``run`` is ``deferToThread`` (injectable for tests)."""

    def __init__(self, at_once: int, per_source: int, total: int, run=None):
        self.at_once = at_once
        self.per_source = per_source
        self.total = total
        self._run = run or threads.deferToThread
        self._lines = collections.OrderedDict()  # source -> deque of waiting jobs; next to serve first
        self._waiting = 0
        self._running = 0

    def submit(self, source: str, function, *args):
        """A Deferred of ``function(*args)``, run when ``source``'s turn comes;
        failed with QueueFull when it cannot wait."""
        line = self._lines.get(source)
        if self._waiting >= self.total:
            return defer.fail(QueueFull("%d logins are waiting for a password check" % self._waiting))
        if line is not None and len(line) >= self.per_source:
            return defer.fail(QueueFull("%d logins from %s are waiting for a password check"
                                        % (len(line), source)))
        if line is None:
            line = self._lines[source] = collections.deque()
        job = (defer.Deferred(lambda d: self._withdraw(source, job)), function, args)
        line.append(job)
        self._waiting += 1
        self._start_jobs()
        return job[0]

    def _withdraw(self, source, job) -> None:
        """A cancelled job: out of its line if it still waits (a running one
        finishes, and its result is dropped)."""
        line = self._lines.get(source)
        if line is not None and job in line:
            line.remove(job)
            self._waiting -= 1
            if not line:
                del self._lines[source]

    def _start_jobs(self) -> None:
        while self._running < self.at_once and self._lines:
            source, line = next(iter(self._lines.items()))
            job = line.popleft()
            if line:
                self._lines.move_to_end(source)  # its next job after every other source's
            else:
                del self._lines[source]
            self._waiting -= 1
            self._running += 1
            deferred, function, args = job
            self._run(function, *args).addBoth(self._finished, deferred)

    def _finished(self, result, deferred) -> None:
        self._running -= 1
        if not deferred.called:  # else it was cancelled while running
            if isinstance(result, Failure):
                deferred.errback(result)
            else:
                deferred.callback(result)
        self._start_jobs()
