"""``twistd flowmq``: the command-line options and the service tree.

``Options`` turns every setting of ``flowmq.config`` into an option, loads
``--config FILE`` and applies the options over it; ``build_service`` makes
the MultiService (the broker first, then one listener per protocol) that
``makeService``, etc/flowmq.tac and the tests all use.
"""

from __future__ import annotations

import gc
import itertools
import os
import platform

import twisted
from twisted.application import service
from twisted.internet import defer
from twisted.python import usage

from flowmq import __version__, config
from flowmq.core.broker import Broker
from flowmq.listener import ListenerService
from flowmq.logs import logger, set_level
from flowmq.mqtt.protocol import MqttFactory
from flowmq.mqtt.service import MqttService
from flowmq.nats.jetstream.service import JetStream
from flowmq.nats.protocol import NatsFactory
from flowmq.security import ListenerTLS, Security
from flowmq.signals import SignalService
from flowmq.transport import ImmediateWriteEndpoint

log = logger("flowmq")


#: The PyPy GC nursery that FlowMQ recommends (docs/PERFORMANCE.md, "PyPy's
#: nursery"). PyPy's default is near the CPU's L2 cache (1 MB on the
#: reference machine): payload bytes waiting in output queues then outlive
#: the frequent minor collections, and each costs a copy and major
#: collection work.
RECOMMENDED_NURSERY = "32M"


def _log_pypy_nursery() -> None:
    """On PyPy, the GC nursery in use, with the advice when it is PyPy's default."""
    if platform.python_implementation() != "PyPy":
        return
    size = gc.get_stats().nursery_size  # PyPy's own text, "1.0MB"
    if os.environ.get("PYPY_GC_NURSERY"):
        log.info("PyPy GC nursery: {size} (PYPY_GC_NURSERY)", size=size)
    else:
        log.warn("PyPy GC nursery: {size}, PyPy's default; start FlowMQ with PYPY_GC_NURSERY={rec} for "
                 "payloads of a kilobyte and more (up to twice the throughput; docs/PERFORMANCE.md)",
                 size=size, rec=RECOMMENDED_NURSERY)


class Options(usage.Options):
    synopsis = "[--config FILE] [options]"
    longdesc = (
        "Run the FlowMQ broker. Settings come from the embedded defaults, then "
        "from the TOML file given with --config, then from these options "
        "(each option is the setting <section>.<key> of the file). Settings "
        "that only a config file can give: "
        + ", ".join(setting.name for setting in config.SETTINGS if not setting.cli)
        + "."
    )
    optParameters = [["config", "c", None, "TOML config file to load (see etc/flowmq.toml)"]] + [
        [setting.option, None, None,
         setting.help if setting.default in (None, ()) else "%s [default: %s]" % (setting.help, setting.default)]
        for setting in config.SETTINGS
        if setting.cli
    ]

    def postOptions(self):
        overrides = {
            setting.name: self[setting.option]
            for setting in config.SETTINGS
            if setting.cli and self[setting.option] is not None
        }
        try:
            self.settings = config.load(self["config"], overrides)
            self.security = Security(self.settings)
        except config.ConfigError as e:
            # A settings error, not a usage error: say just what is wrong
            # (the key and where it came from) and exit non-zero.
            raise SystemExit("flowmq: configuration error: %s" % (e,))


class BrokerService(service.MultiService):
    """The whole broker: the core service, its protocol listeners, and the
    handling of operator signals (flowmq.signals)."""

    def __init__(self, settings, reactor, security):
        service.MultiService.__init__(self)
        self.settings = settings
        self.security = security
        set_level(settings.broker.log_level)
        SignalService(reactor).setServiceParent(self)
        self.broker = Broker(settings, reactor)
        self.broker.setServiceParent(self)
        self.jetstream = None
        if settings.jetstream.enabled:  # a sibling of the broker: it saves its consumers before the engine closes
            self.jetstream = JetStream(self.broker, settings)
            self.jetstream.setServiceParent(self)
        #: Listener services by name: the protocol's ("NATS") for its first
        #: listener, then "NATS 2", "NATS 3" ... for those of <section>.listeners.
        self.listeners = {}
        client_ids = itertools.count(1)  # one [cid N] per client of the whole broker
        #: The services protocols share between their listeners, by section ("mqtt": sessions, retained ...).
        self.protocol_services = {}
        for plugin in PROTOCOLS:
            if getattr(settings, plugin.section).enabled:
                shared = None
                if plugin.build_shared is not None:
                    shared = self.protocol_services[plugin.section] = plugin.build_shared(self.broker, settings)
                    shared.setServiceParent(self)
                for listener in plugin.listeners(self.broker, settings, reactor, security, client_ids, shared):
                    listener.setServiceParent(self)
                    self.listeners[listener.name] = listener

    def privilegedStartService(self):
        source = self.settings.source or "embedded defaults"
        log.info("FlowMQ {version} starting ({impl} {pyver}, Twisted {tv}); settings from {source}",
                 version=__version__, impl=platform.python_implementation(),
                 pyver=platform.python_version(), tv=twisted.__version__, source=source)
        data_dir = os.path.abspath(self.settings.broker.data_dir)
        try:
            os.makedirs(data_dir, exist_ok=True)
        except OSError as e:
            raise RuntimeError("broker.data_dir %s cannot be created: %s" % (data_dir, e.strerror))
        log.info("data directory: {path}", path=data_dir)
        _log_pypy_nursery()
        service.MultiService.privilegedStartService(self)

    def startService(self):
        service.MultiService.startService(self)
        # Everything made so far lives as long as the process: keep it out of
        # the cyclic collector's full passes, which otherwise walk it all and
        # show up as pauses of tens of milliseconds.
        if hasattr(gc, "freeze"):
            gc.freeze()

    def stopService(self):
        """The listeners first, until their connections are drained (what
        a closing connection does, such as an MQTT Will or a session put
        away, still has the protocols' services and the store); then the
        other services, the last started first."""
        log.info("FlowMQ shutting down: closing listeners and draining connections")
        service.Service.stopService(self)
        children = list(self)[::-1]
        listeners = [child for child in children if child in self.listeners.values()]
        drained = defer.DeferredList([_stop(listener) for listener in listeners])
        return drained.addCallback(lambda _: defer.DeferredList([_stop(child) for child in children
                                                                 if child not in listeners]))


def _stop(child) -> defer.Deferred:
    """Stop one service; a failure is logged, and the others still stop."""
    def failed(failure):
        log.failure("stopping {service} failed", failure, service=child)
    return defer.maybeDeferred(child.stopService).addErrback(failed)


def _describe(security, tls) -> str:
    """How a listener secures its clients, for the start-up log."""
    auth = "auth required" if security.portal is not None else "no auth"
    return "%s, %s" % (auth, "no TLS" if tls is None else tls.describe())


class ProtocolPlugin:
    """One protocol FlowMQ serves: its name in the logs; its config section
    (``<section>.enabled``, ``.host``, ``.port`` with the default port,
    ``.listeners``, the [limits] overrides and its own keys, declared in
    ``flowmq.config`` with every other default); ``build_factory(broker,
    section settings, clock, security, tls, client_ids, siblings, shared)``,
    which makes a ``flowmq.listener.ConnectionRegistry`` for one listener;
    and ``describe(section settings)``, the protocol's own part of the
    "listening on" log line.

    ``build_shared(broker, settings)``, when given, makes the service that
    all the protocol's listeners share (MQTT's sessions and retained
    messages), a child of the broker service, started before them.

    A protocol without an in-band TLS upgrade (MQTT) has ``tls_port``: its
    ``port`` is plain text, and with [tls] set it also listens with TLS
    from the first byte on ``<section>.tls_port``; each of its TLS listeners
    does the handshake first."""

    def __init__(self, name: str, section: str, build_factory, describe, build_shared=None,
                 tls_port: bool = False):
        self.name = name
        self.section = section
        self.build_factory = build_factory
        self.describe = describe
        self.build_shared = build_shared
        self.tls_port = tls_port

    def listeners(self, broker, settings, reactor, security, client_ids=None, shared=None) -> list:
        """The listener services of this protocol (not yet started): one on
        ``<section>.host``/``.port`` (TLS with [tls] when it is set, or on
        ``.tls_port`` as well for a protocol with one), one per entry of
        ``<section>.listeners``. Their factories share the connection
        limit, and ``client_ids`` (the broker's one counter)."""
        own = getattr(settings, self.section)
        if client_ids is None:
            client_ids = itertools.count(1)
        if not self.tls_port:
            places = [(own.host, own.port, security.tls)]
        else:
            places = [(own.host, own.port, None)]
            if security.tls is not None:
                places.append((own.host, own.tls_port, security.tls))
        for entry, tls in zip(own.listeners, security.listeners[self.section]):
            places.append((own.host if entry["host"] is None else entry["host"], entry["port"], tls))
        siblings: list = []
        services = []
        for number, (host, port, tls) in enumerate(places, 1):
            if tls is not None and self.tls_port and not tls.handshake_first:
                tls = ListenerTLS(tls.options, True, tls.verify_clients, tls.timeout)
            tls_first = tls.options if tls is not None and tls.handshake_first else None
            endpoint = ImmediateWriteEndpoint(reactor, port, host, tls_options=tls_first)
            factory = self.build_factory(broker, own, reactor, security, tls, client_ids, siblings, shared)
            services.append(ListenerService(self.name, endpoint, factory,
                                            "%s, %s" % (self.describe(own), _describe(security, tls)),
                                            self.name if number == 1 else "%s %d" % (self.name, number)))
        return services


#: Every protocol FlowMQ serves; adding one is one entry here (and its section in flowmq.config).
PROTOCOLS = (
    ProtocolPlugin("NATS", "nats", NatsFactory, lambda own: "max_payload=%d" % own.max_payload),
    ProtocolPlugin("MQTT", "mqtt", MqttFactory,
                   lambda own: "MQTT 3.1, 3.1.1 and 5.0, max_packet_size=%d" % own.max_packet_size,
                   build_shared=MqttService, tls_port=True),
)


def build_service(settings, reactor=None, security=None) -> BrokerService:
    """The broker service for ``settings``; raises ConfigError for bad auth/TLS settings."""
    if reactor is None:
        from twisted.internet import reactor
    if security is None:
        security = Security(settings)
    return BrokerService(settings, reactor, security)


def makeService(options) -> BrokerService:
    return build_service(options.settings, security=options.security)
