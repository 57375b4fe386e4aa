"""Every core-NATS example of the product's NATS page, run with nats-py.

The code inside each scenario is the page's example, unchanged but for the
server address (and no sleep: a round trip instead); what it prints is checked.
"""

from __future__ import annotations

import json
import os
import re

import nats
import pytest

from conftest import flushed, run


def test_connect_and_publish(broker, capsys):
    async def scenario():
        watcher = await nats.connect(broker.url)
        seen = []

        async def record(msg):
            seen.append((msg.subject, msg.data))

        await watcher.subscribe("sensors.>", cb=record)
        await flushed(watcher)

        # --- the page's example ---
        nc = await nats.connect(broker.url)
        await nc.publish("sensors.temperature", b"22.5")
        payload = {
            "temperature": 22.5,
            "humidity": 65,
            "timestamp": "2024-01-15T10:30:00Z",
        }
        await nc.publish("sensors.room1", json.dumps(payload).encode())
        # ---
        await flushed(nc)
        await flushed(watcher)
        await nc.close()
        await watcher.close()
        return seen

    seen = run(scenario())
    assert seen[0] == ("sensors.temperature", b"22.5")
    assert seen[1][0] == "sensors.room1"
    assert json.loads(seen[1][1]) == {"temperature": 22.5, "humidity": 65, "timestamp": "2024-01-15T10:30:00Z"}


def test_request_reply(broker, capsys):
    async def scenario():
        nc = await nats.connect(broker.url)

        # --- the page's example ---
        async def order_handler(msg):
            order_data = json.loads(msg.data.decode())
            result = {"status": "processed", "order_id": order_data["order_id"]}
            await msg.respond(json.dumps(result).encode())

        await nc.subscribe("orders.process", cb=order_handler)
        response = await nc.request("orders.process", b'{"order_id": "12345"}', timeout=5.0)
        print(f"Response: {response.data.decode()}")
        # ---
        await nc.close()

    run(scenario())
    assert capsys.readouterr().out == 'Response: {"status": "processed", "order_id": "12345"}\n'


def _subscription_scenario(broker, subject, published, **subscribe_kwargs):
    """Subscribe with the page's message_handler, publish each subject, return what it printed."""

    async def scenario():
        nc = await nats.connect(broker.url)

        async def message_handler(msg):
            print(f"Received: {msg.subject} -> {msg.data.decode()}")

        await nc.subscribe(subject, cb=message_handler, **subscribe_kwargs)
        await flushed(nc)
        publisher = await nats.connect(broker.url)
        for name in published:
            await publisher.publish(name, ("payload of " + name).encode())
        await flushed(publisher)
        await flushed(nc)
        await publisher.close()
        await nc.close()

    run(scenario())


@pytest.mark.parametrize(
    "subject, published, expected",
    [
        ("sensors.temperature", ["sensors.temperature", "sensors.humidity"], ["sensors.temperature"]),
        ("sensors.*", ["sensors.temperature", "sensors.room1", "sensors.room1.temperature", "sensors"],
         ["sensors.temperature", "sensors.room1"]),
        ("sensors.+.temperature",
         ["sensors.room1.temperature", "sensors.room2.temperature", "sensors.room1.humidity",
          "sensors.temperature", "sensors.a.b.temperature"],
         ["sensors.room1.temperature", "sensors.room2.temperature"]),
        ("sensors.>",
         ["sensors.temperature", "sensors.room1.temperature", "sensors.room1.humidity", "sensors", "other.x"],
         ["sensors.temperature", "sensors.room1.temperature", "sensors.room1.humidity"]),
        ("devices.+.+.status",
         ["devices.sensor.001.status", "devices.actuator.002.status", "devices.sensor.status",
          "devices.a.b.c.status", "devices.sensor.001.state"],
         ["devices.sensor.001.status", "devices.actuator.002.status"]),
    ],
)
def test_subscriptions_and_wildcards(broker, capsys, subject, published, expected):
    _subscription_scenario(broker, subject, published)
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["Received: %s -> payload of %s" % (name, name) for name in expected]


def test_queue_group_delivers_each_message_to_exactly_one_member(broker):
    async def scenario():
        nc = await nats.connect(broker.url)
        received = {1: [], 2: []}

        def handler_for(member):
            async def message_handler(msg):
                received[member].append(msg.data)
            return message_handler

        # --- the page's example (one handler per member, to see who got what) ---
        await nc.subscribe("orders.process", queue="order-processors", cb=handler_for(1))
        await nc.subscribe("orders.process", queue="order-processors", cb=handler_for(2))
        # ---
        await flushed(nc)
        publisher = await nats.connect(broker.url)
        for i in range(100):
            await publisher.publish("orders.process", b"%d" % i)
        await flushed(publisher)
        await flushed(nc)
        await publisher.close()
        await nc.close()
        return received

    received = run(scenario())
    everything = sorted(received[1] + received[2], key=int)
    assert everything == [b"%d" % i for i in range(100)]  # each message exactly once
    assert len(received[1]) == len(received[2]) == 50  # spread evenly over the members


def test_headers_both_ways(broker):
    async def scenario():
        nc = await nats.connect(broker.url)
        got = []

        async def handler(msg):
            got.append(msg)
            if msg.reply:
                await nc.publish(msg.reply, b"ack", headers={"reply-header": "yes"})

        await nc.subscribe("orders.new", cb=handler)
        await flushed(nc)

        # --- the page's example ---
        headers = {
            "source": "order-service",
            "version": "1.0",
            "priority": "high",
        }
        await nc.publish(
            "orders.new",
            b'{"order_id": "12345"}',
            headers=headers,
        )
        # ---
        response = await nc.request("orders.new", b"ping", timeout=5, headers={"x-request": "1"})
        await flushed(nc)
        await nc.close()
        return got, response

    got, response = run(scenario())
    assert got[0].data == b'{"order_id": "12345"}'
    assert got[0].headers == {"source": "order-service", "version": "1.0", "priority": "high"}
    assert got[1].headers == {"x-request": "1"}
    assert response.data == b"ack"
    assert response.headers == {"reply-header": "yes"}


def test_error_handling_example(broker, capsys):
    async def main():
        try:
            # Connect to FlowMQ
            nc = await nats.connect(broker.url)

            # Subscribe with error handling
            async def message_handler(msg):
                try:
                    data = json.loads(msg.data.decode())
                    # Process message
                    print(f"Processed: {data}")
                except json.JSONDecodeError as e:
                    print(f"Invalid JSON: {e}")
                except Exception as e:
                    print(f"Processing error: {e}")

            await nc.subscribe("sensors.*", cb=message_handler)

            # The page keeps the connection for an hour; this test publishes meanwhile.
            publisher = await nats.connect(broker.url)
            await flushed(nc)
            await publisher.publish("sensors.good", b'{"value": 1}')
            await publisher.publish("sensors.bad", b"{not json")
            await flushed(publisher)
            await publisher.close()
            # Both messages came before nc's PONG, and nats-py wakes the handler's
            # task before the flush's waiter: the handler has printed when this returns.
            await flushed(nc)
        except nats.errors.ConnectionError as e:
            print(f"Connection error: {e}")
        except Exception as e:
            print(f"Unexpected error: {e}")
        finally:
            await nc.close()

    run(main())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Processed: {'value': 1}"
    assert lines[1].startswith("Invalid JSON: ")
    assert len(lines) == 2


def test_readme_first_example(broker, capsys):
    """The README's first publish-and-subscribe example, pointed at the test broker."""
    with open(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "README.md")) as f:
        code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
    assert "nats://127.0.0.1:4222" in code
    exec(compile(code.replace("nats://127.0.0.1:4222", broker.url), "README.md", "exec"), {})
    assert capsys.readouterr().out == (
        "Received: sensors.room1.temperature -> 22.5\n"
        'Response: {"status": "processed"}\n'
    )
