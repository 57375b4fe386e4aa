"""The connection base (flowmq.connection) under a tiny protocol of its own,
on StringTransport and task.Clock: what every protocol inherits."""

from __future__ import annotations

from flowmq.connection import BrokerConnection
from flowmq.listener import ConnectionRegistry
from tests.wire import WireBroker, WireClient, WireTransport


class Quiet(BrokerConnection):
    """A protocol whose clients ping (as MQTT's): no keepalive frame, and
    it never calls keepalive_answered; it ignores what it reads."""

    def dataReceived(self, data):
        pass

    def stop_consuming(self):
        pass

    def farewell(self, reason):
        return b""


def test_a_protocol_without_a_keepalive_frame_counts_any_input_as_the_answer():
    """Before: the unanswered-keepalive count rose every interval whatever
    the client sent, and a client that kept talking was closed as stale."""
    wire = WireBroker()
    nats = wire.factory("nats")
    registry = ConnectionRegistry(wire.broker, wire.clock, nats.limits, nats.security)
    client = WireClient(Quiet(registry), WireTransport(40100), wire.clock)
    interval, most = nats.limits.ping_interval, nats.limits.max_pings_out
    for _ in range(3 * (most + 1)):
        client.advance(interval)
        client.send(b"ping")
    assert not client.closing
    client.advance(interval * (most + 2))  # silence: stale
    assert client.closing
    client.finish()
    wire.close()
