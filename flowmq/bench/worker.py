"""The envelope shared by the worker processes that meet at the barrier
(``pubsub.publisher``/``subscriber``, ``reqrep.requester``/``responder``).

A worker runs its body inside ``with Envelope(role, barrier, results, result)
as env:`` and opens its connection with ``env.connect(host, port)``. On the
way out the envelope turns a broken barrier into "<role>: setup aborted",
any other exception into "<role>: <exception>" plus an abort of the barrier
(so the others do not wait for this one), closes the connection, adds the
worker's CPU seconds (``cpu_s``: is the load generator the bottleneck?)
and puts ``result`` on the results queue, always. Errors are reported, never raised:
the coordinator decides what they mean.
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

    def connect(self, host: str, port: int):
        """``protocol.connect``; the socket is closed when the block ends."""
        self.sock = protocol.connect(host, port)
        return self.sock

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
            self.result["cpu_s"] = time.process_time()
            self.results.put(self.result)
