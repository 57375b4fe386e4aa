"""What every protocol listener shares: the listening service, the connection
registry with its connection limit, and the graceful drain at shutdown.

A protocol's factory subclasses ``ConnectionRegistry``; its protocol calls
``register``/``unregister`` and implements ``close_gracefully()`` (flush what
is queued, then close). The listener service binds an endpoint, logs where it
listens, and on stop closes the port first and then drains the connections.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory

from flowmq.logs import logger


class ConnectionRegistry(Factory):
    """A protocol factory that knows its live connections."""

    noisy = False

    def __init__(self, clock, max_connections: int):
        self.clock = clock
        self.max_connections = max_connections
        self.connections: set = set()
        self._lost: dict = {}  # connection -> Deferred fired when it is gone
        self._next_id = 0

    def next_client_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def register(self, connection) -> bool:
        """Track a new connection; False when it is over the connection limit."""
        self.connections.add(connection)
        return len(self.connections) <= self.max_connections

    def unregister(self, connection) -> None:
        self.connections.discard(connection)
        waiter = self._lost.pop(connection, None)
        if waiter is not None:
            waiter.callback(None)

    def drain(self) -> defer.Deferred:
        """Close every connection gracefully; fires when all of them are gone."""
        waiters = []
        for connection in list(self.connections):
            waiter = self._lost[connection] = defer.Deferred()
            waiters.append(waiter)
            connection.close_gracefully()
        return defer.gatherResults(waiters)


class ListenerService(service.Service):
    """Listens on one endpoint for one protocol, and drains it on stop."""

    log = logger("flowmq.listener")

    def __init__(self, protocol_name: str, endpoint, factory: ConnectionRegistry, details: str = ""):
        self.name = protocol_name
        self.endpoint = endpoint
        self.factory = factory
        self.details = details
        self.port = None

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        outcome = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        # TCP endpoints answer at once: raise here so that twistd reports a
        # port that cannot be bound and exits instead of running without it.
        if outcome and not hasattr(outcome[0], "getHost"):
            outcome[0].raiseException()
        self.port = outcome[0] if outcome else None
        if self.port is not None:
            address = self.port.getHost()
            self.log.info(
                "{protocol} listening on {host}:{port}{details}",
                protocol=self.name, host=address.host, port=address.port,
                details=" (%s)" % self.details if self.details else "",
            )

    def startService(self):
        if self.port is None:
            self.privilegedStartService()
        service.Service.startService(self)

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            yield port.stopListening()
        yield self.factory.drain()
