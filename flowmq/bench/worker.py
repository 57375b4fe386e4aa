"""The envelope shared by the worker processes that meet at the barrier
(``pubsub.publisher``/``subscriber``, ``mqttpubsub``'s, ``reqrep.requester``/
``responder`` and the JetStream workers).

A worker runs its body inside ``with Envelope(role, barrier, results, result)
as env:``, opens its connection with ``env.connect(host, port)`` and waits
at the barrier with ``env.start(timeout)``. On the way out the envelope
turns a broken barrier into "<role>: setup aborted", any other exception
into "<role>: <exception>" plus an abort of the barrier (so the others do
not wait for this one), closes the connection, adds how busy the worker was
and puts ``result`` on the results queue, always. Errors are reported, never
raised: the coordinator decides what they mean.

How busy: the CPU seconds (``cpu_s``) and wall seconds (``wall_s``) of the
measured window, from the barrier to the end of the body or to the moment
given with ``env.end(at, cpu)`` (a subscriber's last message: a queue
member then idles until it is told to stop), and their ratio ``busy`` (None
when the worker never got past the barrier). A worker busy all of its window
is what limits the run, not the server.
"""

from __future__ import annotations

import threading
import time

from flowmq.bench import protocol


class Envelope:
    def __init__(self, role: str, barrier, results, result: dict):
        self.role = role
        self.barrier = barrier
        self.results = results
        self.result = result
        self.sock = None
        self._start = None  # (monotonic, process_time) when the measured window began
        self._end = None

    def connect(self, host: str, port: int):
        """``protocol.connect``; the socket is closed when the block ends."""
        self.sock = protocol.connect(host, port)
        return self.sock

    def start(self, timeout: float) -> None:
        """Wait at the barrier; the measured window begins when everyone is there."""
        self.barrier.wait(timeout)
        self._start = (time.monotonic(), time.process_time())

    def end(self, at=None, cpu=None) -> None:
        """End the measured window at monotonic time ``at``, when the process
        had used ``cpu`` CPU seconds (now if ``at`` is None); a later call
        moves the end."""
        self._end = (at, cpu) if at is not None else (time.monotonic(), time.process_time())

    def __enter__(self) -> "Envelope":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None or not issubclass(exc_type, Exception):
                return False  # done, or KeyboardInterrupt/SystemExit: let it go on
            if issubclass(exc_type, threading.BrokenBarrierError):
                self.result["errors"].append("%s: setup aborted" % self.role)
            else:
                self.result["errors"].append("%s: %s" % (self.role, exc))
                self.barrier.abort()
            return True
        finally:
            if self.sock is not None:
                self.sock.close()
            self._busy()
            self.results.put(self.result)

    def _busy(self) -> None:
        cpu = wall = busy = None
        if self._start is not None:
            if self._end is None:
                self.end()
            wall = self._end[0] - self._start[0]
            cpu = self._end[1] - self._start[1]
            busy = cpu / wall if wall > 0 else None
        self.result.update(cpu_s=cpu, wall_s=wall, busy=busy)
