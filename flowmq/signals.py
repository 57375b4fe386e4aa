"""Operator signals that twistd leaves at their default action.

nats-server enters lame-duck mode on SIGUSR2 (stop accepting, then close the
clients over a grace period). FlowMQ has no lame-duck mode yet, and the
default action of SIGUSR2 is to end the process, so an operator script
written for nats-server would kill the broker. Until lame-duck mode exists,
SIGUSR2 is logged and ignored.

Python lets only the main thread set signal handlers. Under twistd (and a tac
file) the services start in the main thread, before the reactor runs; when
the reactor runs in another thread (the test suite) nothing is installed. As
twistd does with SIGUSR1, a handler that someone else installed is left alone.
"""

from __future__ import annotations

import signal
import threading

from twisted.application import service

from flowmq.logs import logger

log = logger("flowmq.signals")


class SignalService(service.Service):
    """Ignores SIGUSR2 (with a log line) while it runs."""

    def __init__(self, reactor):
        self._reactor = reactor
        self._installed = False

    def startService(self):
        service.Service.startService(self)
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGUSR2) != signal.SIG_DFL:
            return
        signal.signal(signal.SIGUSR2, self._on_sigusr2)
        self._installed = True

    def stopService(self):
        if self._installed:
            signal.signal(signal.SIGUSR2, signal.SIG_DFL)
            self._installed = False
        return service.Service.stopService(self)

    def _on_sigusr2(self, number, frame):
        # A signal handler may interrupt the reactor anywhere: hand the work to
        # the reactor loop, as Twisted's own SIGINT/SIGTERM handlers do.
        self._reactor.callFromThread(log.warn, "SIGUSR2: lame-duck mode is not supported yet; ignoring")
