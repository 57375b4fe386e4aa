"""``twistd flowmq``: the command-line options and the service tree.

``Options`` turns every setting of ``flowmq.config`` into an option, loads
``--config FILE`` and applies the options over it; ``build_service`` makes
the MultiService (the broker first, then one listener per protocol) that
``makeService``, etc/flowmq.tac and the tests all use.
"""

from __future__ import annotations

import gc
import os
import platform

import twisted
from twisted.application import service
from twisted.python import usage

from flowmq import __version__, config
from flowmq.core.broker import Broker
from flowmq.listener import ListenerService
from flowmq.logs import logger, set_level
from flowmq.nats.protocol import NatsFactory
from flowmq.transport import ImmediateWriteEndpoint

log = logger("flowmq")


class Options(usage.Options):
    synopsis = "[--config FILE] [options]"
    longdesc = (
        "Run the FlowMQ broker. Settings come from the embedded defaults, then "
        "from the TOML file given with --config, then from these options "
        "(each option is the setting <section>.<key> of the file)."
    )
    optParameters = [["config", "c", None, "TOML config file to load (see etc/flowmq.toml)"]] + [
        [setting.option, None, None, "%s [default: %s]" % (setting.help, setting.default)]
        for setting in config.SETTINGS
    ]

    def postOptions(self):
        overrides = {
            setting.name: self[setting.option]
            for setting in config.SETTINGS
            if self[setting.option] is not None
        }
        try:
            self.settings = config.load(self["config"], overrides)
        except config.ConfigError as e:
            # A settings error, not a usage error: say just what is wrong
            # (the key and where it came from) and exit non-zero.
            raise SystemExit("flowmq: configuration error: %s" % (e,))


class BrokerService(service.MultiService):
    """The whole broker: the core service and its protocol listeners."""

    def __init__(self, settings, reactor):
        service.MultiService.__init__(self)
        self.settings = settings
        set_level(settings.broker.log_level)
        self.broker = Broker(settings, reactor)
        self.broker.setServiceParent(self)
        self.listeners = {}
        nats = settings.nats
        if nats.enabled:
            self._add_listener("NATS", ImmediateWriteEndpoint(reactor, nats.port, nats.host),
                               NatsFactory(self.broker, nats, reactor),
                               "max_payload=%d" % nats.max_payload)

    def _add_listener(self, name, endpoint, factory, details):
        listener = ListenerService(name, endpoint, factory, details)
        listener.setServiceParent(self)
        self.listeners[name] = listener

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
        service.MultiService.privilegedStartService(self)

    def startService(self):
        service.MultiService.startService(self)
        # Everything made so far lives as long as the process: keep it out of
        # the cyclic collector's full passes, which otherwise walk it all and
        # show up as pauses of tens of milliseconds.
        if hasattr(gc, "freeze"):
            gc.freeze()

    def stopService(self):
        log.info("FlowMQ shutting down: closing listeners and draining connections")
        return service.MultiService.stopService(self)


def build_service(settings, reactor=None) -> BrokerService:
    if reactor is None:
        from twisted.internet import reactor
    return BrokerService(settings, reactor)


def makeService(options) -> BrokerService:
    return build_service(options.settings)
