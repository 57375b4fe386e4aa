"""Whom a stream answers: a PubAck (or the error JSON) goes to a NATS
publisher's reply subject only, as nats-server does; a message that another
protocol published with a reply address (an MQTT 5 response topic, an AMQP
reply_to) is stored, and nothing is written to that address."""

from __future__ import annotations

import json

import nats

from flowmq.core.message import Message
from tests.conftest import flushed, run


class OtherProtocolConnection:
    """The publishing connection of another protocol, as the broker sees one."""

    protocol = "mqtt"
    echo = True
    permissions = None

    def deliver(self, message, subscriptions):
        pass


def test_a_stream_answers_only_nats_publishers(broker):
    core = broker.service.broker

    def publish_from_other_protocol(topic, reply_to, headers=None):
        core.publish(Message(topic, b"from elsewhere", headers, reply_to, OtherProtocolConnection()))

    async def scenario():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.>"])
        answers = await nc.subscribe("answers.>")
        await flushed(nc)
        broker.call(publish_from_other_protocol, "orders/other", "answers/other")
        broker.call(publish_from_other_protocol, "orders/refused", "answers/refused",
                    (("Nats-Expected-Stream", "ELSEWHERE"),))
        # Published after those: a NATS publisher's PubAck is the first answer of all.
        await nc.publish("orders.nats", b"from nats", reply="answers.nats")
        first = await answers.next_msg(timeout=10)
        await nc.publish("orders.refused", b"", reply="answers.nats-refused",
                         headers={"Nats-Expected-Stream": "ELSEWHERE"})
        second = await answers.next_msg(timeout=10)
        info = await js.stream_info("ORDERS")
        await nc.close()
        return first, second, info

    first, second, info = run(scenario())
    assert first.subject == "answers.nats" and json.loads(first.data) == {"stream": "ORDERS", "seq": 2}
    assert second.subject == "answers.nats-refused" and json.loads(second.data)["error"]["err_code"] == 10060
    assert info.state.messages == 2  # the other protocol's message is stored
