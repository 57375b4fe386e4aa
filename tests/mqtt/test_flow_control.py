"""Flow control for QoS 1 and 2: a subscriber that acknowledges slowly holds
its publishers back instead of losing messages; one that stops acknowledging
holds nobody for long (mqtt.max_queued, mqtt.stall_deadline; README, "MQTT").

Raw clients (tests/mqtt/raw_mqtt.py): the publisher writes every PUBLISH in
one go, as a 3.1.1 client may (it has no Receive Maximum), so that a single
read of the broker holds far more than the subscriber's queue."""

from __future__ import annotations

import time

from flowmq.mqtt import codec
from flowmq.mqtt.codec import packets as P

pytest_plugins = ("raw_mqtt",)  # its fixtures: mqtt_client, make_witness

COUNT = 300
SETTINGS = {"mqtt.max_queued": 10, "mqtt.max_inflight": 2}


def _blast(publisher, count: int) -> None:
    """``count`` QoS 1 PUBLISHes to flow/t in one write, payloads b"0", b"1", ..."""
    publisher.send(b"".join(codec.encode(P.Publish("flow/t", b"%d" % n, 1, packet_id=n + 1), P.MQTT_3_1_1)
                            for n in range(count)))


def _pubacks(publisher, count: int) -> list:
    return [publisher.read_packet() for _ in range(count)]


def test_a_slow_subscriber_gets_every_qos1_message_in_order(start_broker, mqtt_client, make_witness):
    """Far more messages than max_inflight + max_queued reach a subscriber
    that acknowledges each one late: its publisher is held back (not read)
    while the queue is long, and every message arrives, in order."""
    broker = start_broker(**SETTINGS)
    witness = make_witness(broker.mqtt_port)
    subscriber = mqtt_client(P.MQTT_5, broker.mqtt_port)
    subscriber.connect("slow")
    subscriber.subscribe("flow/t", qos=1)
    publisher = mqtt_client(P.MQTT_3_1_1, broker.mqtt_port)
    publisher.connect("fast")
    _blast(publisher, COUNT)
    received = []
    for _ in range(COUNT):
        packet = subscriber.read_packet()
        assert isinstance(packet, P.Publish) and packet.qos == 1, packet
        received.append(packet.payload)
        time.sleep(0.002)  # a slow application
        subscriber.send(P.Puback(packet.packet_id))
    assert received == [b"%d" % n for n in range(COUNT)]
    assert _pubacks(publisher, COUNT) == [P.Puback(n + 1) for n in range(COUNT)]
    publisher.assert_open()
    witness.check()


def test_a_subscriber_that_stops_acknowledging_holds_its_publisher_for_stall_deadline_only(
        start_broker, mqtt_client, make_witness):
    """A subscriber that takes its messages but never acknowledges them: the
    publisher is held back for stall_deadline, then goes on (every PUBLISH
    acknowledged); the subscriber has max_inflight messages, and the queue
    behind them keeps max_queued, the rest is dropped (mosquitto's rule)."""
    broker = start_broker(**SETTINGS, **{"mqtt.stall_deadline": 0.5})
    witness = make_witness(broker.mqtt_port)
    subscriber = mqtt_client(P.MQTT_5, broker.mqtt_port)
    subscriber.connect("mute", clean=False, properties={"session_expiry_interval": 60})
    subscriber.subscribe("flow/t", qos=1)
    publisher = mqtt_client(P.MQTT_3_1_1, broker.mqtt_port)
    publisher.connect("fast")
    started = time.monotonic()
    _blast(publisher, COUNT)
    assert _pubacks(publisher, COUNT) == [P.Puback(n + 1) for n in range(COUNT)]
    assert time.monotonic() - started >= 0.4  # held back first
    assert [subscriber.read_packet().payload for _ in range(2)] == [b"0", b"1"]
    # Reconnected, the client gets the two again (DUP), then the queue: the ten after them.
    subscriber.close()
    again = mqtt_client(P.MQTT_5, broker.mqtt_port)
    again.connect("mute", clean=False, properties={"session_expiry_interval": 60})
    got = []
    for _ in range(12):
        packet = again.receive()
        got.append(packet.payload)
    assert got == [b"%d" % n for n in range(12)]
    assert again.settle() == []
    witness.check()
