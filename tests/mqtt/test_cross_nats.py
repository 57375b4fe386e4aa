"""NATS <-> MQTT through the unified router: the spec page's two examples as
written, wildcards both ways, headers and user properties, request-reply
both ways, queue groups shared with $share, the escape rule, and a
JetStream stream storing MQTT publishes."""

from __future__ import annotations

import asyncio
import json
import queue
import threading

import nats
import paho.mqtt.client as mqtt
import pytest

from conftest import flushed, run
from pahoclient import V5, V311, Paho, properties, wait_until


# Bodies below and above the size from which a payload travels as a piece of its own (flowmq.connection).
BODIES = pytest.mark.parametrize("body", [b'{"order_id": "12345"}', bytes(range(256)) * 280],
                                 ids=["small", "70KB"])

# The page's `mqtt.Client()` is paho's callback API version 1, which paho 2 warns about.
SPEC_CLIENT = pytest.mark.filterwarnings("ignore:Callback API version 1 is deprecated:DeprecationWarning")


@SPEC_CLIENT
def test_spec_nats_to_mqtt(broker):
    received = queue.Queue()

    # MQTT Consumer, as the spec page writes it (host and port are the test broker's).
    def on_message(client, userdata, msg):
        received.put(f"Received: {msg.payload.decode()}")

    client = mqtt.Client()
    client.on_message = on_message
    client.connect("127.0.0.1", broker.mqtt_port)
    client.subscribe("sensors/temperature")
    loop = threading.Thread(target=client.loop_forever, daemon=True)
    loop.start()

    async def nats_publisher():
        nc = await nats.connect(broker.url)
        # The subscription is in place once the broker has answered it; publish until it is.
        for _ in range(100):
            await nc.publish("sensors.temperature", b'{"value": 22.5}')
            await flushed(nc)
            if not received.empty():
                break
            await asyncio.sleep(0.05)
        await nc.close()

    run(nats_publisher())
    assert received.get(timeout=10) == 'Received: {"value": 22.5}'
    client.disconnect()
    loop.join(10)


@SPEC_CLIENT
def test_spec_mqtt_to_nats(broker):
    async def scenario():
        nc = await nats.connect(broker.url)
        got = asyncio.Queue()

        async def message_handler(msg):
            await got.put(f"Received: {msg.data.decode()}")

        await nc.subscribe("sensors.temperature", cb=message_handler)
        await flushed(nc)
        # MQTT Publisher, as the spec page writes it.
        client = mqtt.Client()
        client.connect("127.0.0.1", broker.mqtt_port)
        client.loop_start()
        client.publish("sensors/temperature", '{"value": 22.5}')
        line = await asyncio.wait_for(got.get(), 10)
        client.loop_stop()
        client.disconnect()
        await nc.close()
        return line

    assert run(scenario()) == 'Received: {"value": 22.5}'


def test_wildcards_across_protocols(broker):
    mqtt_sub = Paho(broker.mqtt_port, V311)
    mqtt_sub.subscribe("devices/+/+/status", 0)

    async def scenario():
        nc = await nats.connect(broker.url)
        star = await nc.subscribe("sensors.*.temperature")
        plus = await nc.subscribe("sensors.+.temperature")
        tail = await nc.subscribe("sensors.>")
        await flushed(nc)
        publisher = Paho(broker.mqtt_port, V311)
        publisher.publish("sensors/room1/temperature", b"21", 1)
        got = [await sub.next_msg(timeout=10) for sub in (star, plus, tail)]
        await nc.publish("devices.iot.d1.status", b"up")
        await flushed(nc)
        publisher.disconnect()
        await nc.close()
        return [(msg.subject, msg.data) for msg in got]

    assert run(scenario()) == [("sensors.room1.temperature", b"21")] * 3
    got = mqtt_sub.next()
    assert (got.topic, got.payload) == ("devices/iot/d1/status", b"up")
    mqtt_sub.disconnect()


@BODIES
def test_nats_headers_are_mqtt5_user_properties_and_back(broker, body):
    mqtt_sub = Paho(broker.mqtt_port, V5)
    mqtt_sub.subscribe("orders/new", 1)

    async def scenario():
        nc = await nats.connect(broker.url)
        sub = await nc.subscribe("orders.back")
        await flushed(nc)
        await nc.publish("orders.new", body,
                         headers={"source": "order-service", "version": "1.0", "priority": "high"})
        await flushed(nc)
        got = mqtt_sub.next()
        publisher = Paho(broker.mqtt_port, V5)
        publisher.publish("orders/back", body[::-1], 1,
                          props=properties(UserProperty=[("trace", "abc"), ("n", "1")]))
        back = await sub.next_msg(timeout=10)
        publisher.disconnect()
        await nc.close()
        return got, back

    got, back = run(scenario())
    assert got.payload == body
    assert got.properties.UserProperty == [("source", "order-service"), ("version", "1.0"), ("priority", "high")]
    assert back.data == body[::-1]
    assert back.headers["trace"] == "abc" and back.headers["n"] == "1"
    mqtt_sub.disconnect()


def test_nats_property_headers_reach_mqtt5_as_its_fields(broker):
    mqtt_sub = Paho(broker.mqtt_port, V5)
    mqtt_sub.subscribe("typed/#", 1)

    async def scenario():
        nc = await nats.connect(broker.url)
        await nc.publish("typed.json", b"{}", headers={"Content-Type": "application/json", "Nats-Msg-Id": "m-1",
                                                        "FlowMQ-Correlation": "abc%00"})
        await flushed(nc)
        await nc.close()

    run(scenario())
    got = mqtt_sub.next().properties
    assert got.ContentType == "application/json"
    assert got.CorrelationData == b"abc\x00"  # percent-decoded into MQTT's binary field
    assert ("Nats-Msg-Id", "m-1") in got.UserProperty  # no MQTT field: a user property, as the header
    mqtt_sub.disconnect()


@BODIES
def test_a_nats_request_is_answered_by_an_mqtt5_client(broker, body):
    responder = Paho(broker.mqtt_port, V5)
    responder.subscribe("service/echo", 1)

    def answer():
        request = responder.next()
        responder.publish(request.properties.ResponseTopic, b"echo: " + request.payload, 1)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()

    async def scenario():
        nc = await nats.connect(broker.url)
        reply = await nc.request("service.echo", body, timeout=10)
        await nc.close()
        return reply.data

    assert run(scenario()) == b"echo: " + body
    thread.join(10)
    responder.disconnect()


@BODIES
def test_an_mqtt5_request_is_answered_by_a_nats_responder_with_its_correlation_data(broker, body):
    async def scenario():
        nc = await nats.connect(broker.url)

        async def respond(msg):
            await msg.respond(b"answer to " + msg.data)

        await nc.subscribe("service.ask", cb=respond)
        await flushed(nc)
        requester = Paho(broker.mqtt_port, V5)
        requester.subscribe("my/replies", 1)
        requester.publish("service/ask", body, 1,
                          props=properties(ResponseTopic="my/replies", CorrelationData=b"42"))
        reply = await asyncio.get_running_loop().run_in_executor(None, requester.next)
        requester.disconnect()
        await nc.close()
        return reply

    reply = run(scenario())
    assert reply.payload == b"answer to " + body
    assert reply.properties.CorrelationData == b"42"  # kept for the requester (README, "MQTT")


def test_share_groups_and_nats_queue_groups_are_one_group(broker):
    members = [Paho(broker.mqtt_port, V5), Paho(broker.mqtt_port, V311)]
    for member in members:
        member.subscribe("$share/workers/tasks/+", 1)

    async def scenario():
        nc = await nats.connect(broker.url)
        nats_member = await nc.subscribe("tasks.*", queue="workers")
        await flushed(nc)
        for n in range(30):
            await nc.publish("tasks.t%d" % n, b"%d" % n)
        await flushed(nc)  # the NATS member's share came before the PONG
        got = []
        while nats_member.pending_msgs:
            got.append((await nats_member.next_msg()).data)
        await nc.close()
        return got

    via_nats = run(scenario())
    # The MQTT members' shares were sent too, but their paho threads may not
    # have read them yet: wait until every task has come somewhere.
    assert wait_until(lambda: len(via_nats) + sum(member.messages.qsize() for member in members) >= 30)
    via_mqtt = []
    for member in members:
        while not member.messages.empty():
            via_mqtt.append(member.messages.get().payload)
    everything = sorted(via_nats + via_mqtt, key=int)
    assert everything == [b"%d" % n for n in range(30)]  # each task once
    assert via_nats and via_mqtt  # shared between the two protocols
    assert all(member.nothing_more(0.3) for member in members)  # and no task twice, even late
    for member in members:
        member.disconnect()


def test_levels_nats_cannot_write_travel_escaped(broker):
    async def scenario():
        nc = await nats.connect(broker.url)
        sub = await nc.subscribe("fw.>")
        await flushed(nc)
        publisher = Paho(broker.mqtt_port, V311)
        publisher.publish("fw/v1.2/a b", b"x", 1)
        got = await sub.next_msg(timeout=10)
        mqtt_sub = Paho(broker.mqtt_port, V311)
        mqtt_sub.subscribe("fw/#", 0)
        await nc.publish(got.subject, b"back")
        await flushed(nc)
        back = mqtt_sub.next()
        publisher.disconnect()
        mqtt_sub.disconnect()
        await nc.close()
        return got.subject, back.topic

    assert run(scenario()) == ("fw.v1%2E2.a%20b", "fw/v1.2/a b")


def test_a_jetstream_stream_stores_mqtt_publishes(broker):
    async def scenario():
        nc = await nats.connect(broker.url)
        js = nc.jetstream()
        await js.add_stream(name="SENSORS", subjects=["sensors.>"])
        publisher = Paho(broker.mqtt_port, V5)
        publisher.publish("sensors/a", b"one", 1)
        publisher.publish("sensors/b", b"two", 0, props=properties(UserProperty=[("unit", "C")]))
        publisher.disconnect()
        sub = await js.pull_subscribe("sensors.>", durable="reader")
        msgs = await sub.fetch(2, timeout=10)
        info = await js.stream_info("SENSORS")
        await nc.close()
        return [(m.subject, m.data, (m.headers or {}).get("unit")) for m in msgs], info.state.messages

    got, count = run(scenario())
    assert got == [("sensors.a", b"one", None), ("sensors.b", b"two", "C")]
    assert count == 2


def test_nats_messages_go_to_mqtt_at_the_granted_qos(broker):
    at_two = Paho(broker.mqtt_port, V5)
    at_two.subscribe("plain/topic", 2)
    at_zero = Paho(broker.mqtt_port, V5)
    at_zero.subscribe("plain/topic", 0)

    async def scenario():
        nc = await nats.connect(broker.url)
        await nc.publish("plain.topic", json.dumps({"n": 1}).encode())
        await flushed(nc)
        await nc.close()

    run(scenario())
    assert at_two.next().qos == 2  # NATS has no QoS: the subscription's (README, "MQTT")
    assert at_zero.next().qos == 0
    at_two.disconnect()
    at_zero.disconnect()
