"""The connection base (flowmq.connection) under a tiny protocol of its own,
on StringTransport and task.Clock: what every protocol inherits."""

from __future__ import annotations

from flowmq.connection import BrokerConnection
from flowmq.listener import ConnectionRegistry
from tests.wire import WireBroker, WireClient, WireTransport


class Quiet(BrokerConnection):
    """A protocol whose clients ping (as MQTT's): no keepalive frame; it
    ignores what it reads."""

    def dataReceived(self, data):
        pass

    def stop_consuming(self):
        pass

    def farewell(self, reason):
        return b""


def test_a_protocol_without_a_keepalive_frame_keeps_its_own_time():
    """The base pings only for a protocol that has a keepalive frame: one
    whose clients ping (MQTT) watches them itself, so a quiet client is
    not closed as stale by the base (an MQTT keep alive of 0 is no limit)."""
    wire = WireBroker()
    nats = wire.factory("nats")
    registry = ConnectionRegistry(wire.broker, wire.clock, nats.limits, nats.security)
    client = WireClient(Quiet(registry), WireTransport(40100), wire.clock)
    interval, most = nats.limits.ping_interval, nats.limits.max_pings_out
    client.advance(interval * (most + 2) * 10)
    assert not client.closing
    assert client.take() == b""
    client.finish()
    wire.close()
