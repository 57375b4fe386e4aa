"""What every protocol listener shares: the listening service, the connection
registry with its connection limit, and the graceful drain at shutdown.

A protocol's factory subclasses ``ConnectionRegistry``, which carries what its
connections (``flowmq.connection.BrokerConnection``) need: the broker, the
clock, the limits, the security (portal) and the listener's own TLS, and the
client ids. One protocol may listen on several ports (a plain and a TLS one):
one factory per listener, the connection limit counted over all of that
protocol's listeners, client ids counted once for the whole broker so that a
``[cid N]`` in the logs names one client. The listener service binds an
endpoint, logs where it listens, and on stop closes the port first and then
drains the connections.
"""

from __future__ import annotations

import itertools

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory

from flowmq.connection import CLOSE_SHUTDOWN
from flowmq.logs import logger


class ConnectionRegistry(Factory):
    """A protocol factory that knows its live connections."""

    noisy = False

    def __init__(self, broker, clock, limits, security, tls=None, client_ids=None, siblings=None):
        self.broker = broker
        self.clock = clock
        #: max_connections, max_payload, max_pending, write_deadline,
        #: stall_deadline, ping_interval, max_pings_out (flowmq.config).
        self.limits = limits
        self.max_connections = limits.max_connections
        self.security = security
        #: This listener's flowmq.security.ListenerTLS, None for plain text.
        self.tls = tls
        self._client_ids = client_ids if client_ids is not None else itertools.count(1)
        #: The registries of every listener of this protocol (they share the connection limit).
        self.siblings = siblings if siblings is not None else [self]
        if self not in self.siblings:
            self.siblings.append(self)
        self.connections: set = set()
        self._lost: dict = {}  # connection -> Deferred fired when it is gone

    def next_client_id(self) -> int:
        return next(self._client_ids)

    def register(self, connection) -> bool:
        """Track a new connection; False when the protocol's listeners are
        over their connection limit together."""
        self.connections.add(connection)
        return sum(len(registry.connections) for registry in self.siblings) <= self.max_connections

    def unregister(self, connection) -> None:
        self.connections.discard(connection)
        waiter = self._lost.pop(connection, None)
        if waiter is not None:
            waiter.callback(None)

    def drain(self) -> defer.Deferred:
        """Close every connection gracefully (with the protocol's farewell
        for a shutdown); fires when all of them are gone."""
        waiters = []
        for connection in list(self.connections):
            waiter = self._lost[connection] = defer.Deferred()
            waiters.append(waiter)
            connection.close_for(CLOSE_SHUTDOWN)
        return defer.gatherResults(waiters)


class ListenerService(service.Service):
    """Listens on one endpoint for one protocol, and drains it on stop."""

    log = logger("flowmq.listener")

    def __init__(self, protocol_name: str, endpoint, factory: ConnectionRegistry, details: str = "", name=None):
        self.protocol = protocol_name
        #: The service's name in the broker: the protocol's, or "NATS 2" ... for its other listeners.
        self.name = name or protocol_name
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
                protocol=self.protocol, host=address.host, port=address.port,
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
