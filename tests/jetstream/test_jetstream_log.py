"""A JetStream stream is the core's Log, found in the broker's registry as
("jetstream", name): what a later protocol (a Kafka client) reads, with the
messages NATS clients published, without the NATS package."""

from __future__ import annotations

import nats
import pytest
from nats.js.api import DiscardPolicy

from flowmq.core.message import Message
from flowmq.core.receipts import Receipt
from flowmq.core.store import LimitExceeded
from flowmq.core.streams.log import Log
from tests.conftest import run
from tests.jetstream.test_jetstream_pubacks import OtherProtocolConnection


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


def test_another_protocols_receipt_completes_when_the_stream_has_stored_the_message(broker):
    """What an MQTT PUBACK or an AMQP confirm waits for: the stream's write."""
    async def add_stream():
        nc = await nats.connect(broker.url)
        await nc.jetstream().add_stream(name="ORDERS", subjects=["orders.>"], max_msgs=1, discard=DiscardPolicy.NEW)
        await nc.close()

    run(add_stream())
    core = broker.service.broker

    def publish_with_receipt(payload):
        message = Message("orders/eu", payload, None, None, OtherProtocolConnection())
        message.receipt = Receipt()
        core.publish(message)
        return message.receipt.result()

    assert broker.call(publish_with_receipt, b"one") is None
    with pytest.raises(LimitExceeded):  # the stream is full (discard new)
        broker.call(publish_with_receipt, b"two")
    stored = broker.call(lambda: core.logs.get("jetstream", "ORDERS").store.state().messages)
    assert stored == 1
