"""A JetStream stream is the core's Log, found in the broker's registry as
("jetstream", name): what a later protocol (a Kafka client) reads, with the
messages NATS clients published, without the NATS package."""

from __future__ import annotations

import nats

from flowmq.core.streams.log import Log
from tests.conftest import run


def test_a_stream_is_a_core_log_in_the_registry(broker):
    async def scenario():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.>"])
        await js.publish("orders.eu", b"one")
        await nc.close()

    run(scenario())
    logs = broker.service.broker.logs

    def read():
        log = logs.get("jetstream", "ORDERS")
        stored = log.store.next_message(1)
        return type(log), log.filters, stored.topic, stored.payload, logs.get("kafka", "ORDERS")

    assert broker.call(read) == (Log, ("orders/+/#",), "orders/eu", b"one", None)
