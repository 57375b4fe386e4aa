"""Flow control for QoS 1 and 2: a subscriber that acknowledges slowly holds
its publishers back instead of losing messages; one that stops acknowledging
holds nobody for long (mqtt.max_queued, mqtt.stall_deadline; README, "MQTT").

Raw clients (tests/mqtt/raw_mqtt.py): the publisher writes every PUBLISH in
one go, as a 3.1.1 client may (it has no Receive Maximum), so that a single
read of the broker holds far more than the subscriber's queue."""

from __future__ import annotations

import socket
import threading
import time

from conftest import RawClient
from flowmq.mqtt import codec
from flowmq.mqtt.codec import packets as P

pytest_plugins = ("raw_mqtt",)  # its fixtures: mqtt_client, make_witness

COUNT = 300
SETTINGS = {"mqtt.max_queued": 10, "mqtt.max_inflight": 2}


def _blast(publisher, count: int, prefix: bytes = b"") -> None:
    """``count`` QoS 1 PUBLISHes to flow/t in one write, payloads b"0", b"1", ..."""
    publisher.send(b"".join(codec.encode(P.Publish("flow/t", prefix + b"%d" % n, 1, packet_id=n + 1),
                                         P.MQTT_3_1_1) for n in range(count)))


def _subscriber(mqtt_client, port: int, level: int = P.MQTT_5, client_id: str = "slow", **connect):
    """A client subscribed to flow/t at QoS 1."""
    subscriber = mqtt_client(level, port)
    subscriber.connect(client_id, **connect)
    subscriber.subscribe("flow/t", qos=1)
    return subscriber


def _publisher(mqtt_client, port: int, client_id: str = "fast", **connect):
    """A 3.1.1 client (no Receive Maximum: it may send any number of QoS 1 PUBLISHes at once)."""
    publisher = mqtt_client(P.MQTT_3_1_1, port)
    publisher.connect(client_id, **connect)
    return publisher


def _read_slowly(subscriber, count: int) -> list:
    """The payloads of ``count`` QoS 1 PUBLISHes, each acknowledged late."""
    received = []
    for _ in range(count):
        packet = subscriber.read_packet()
        assert isinstance(packet, P.Publish) and packet.qos == 1, packet
        received.append(packet.payload)
        time.sleep(0.002)  # a slow application
        subscriber.send(P.Puback(packet.packet_id))
    return received


def _pubacks(publisher, count: int) -> list:
    return [publisher.read_packet() for _ in range(count)]


def test_a_slow_subscriber_gets_every_qos1_message_in_order(start_broker, mqtt_client, make_witness):
    """Far more messages than max_inflight + max_queued reach a subscriber
    that acknowledges each one late: its publisher is held back (not read)
    while the queue is long, and every message arrives, in order."""
    broker = start_broker(**SETTINGS)
    witness = make_witness(broker.mqtt_port)
    subscriber = _subscriber(mqtt_client, broker.mqtt_port)
    publisher = _publisher(mqtt_client, broker.mqtt_port)
    _blast(publisher, COUNT)
    assert _read_slowly(subscriber, COUNT) == [b"%d" % n for n in range(COUNT)]
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
    subscriber = _subscriber(mqtt_client, broker.mqtt_port, client_id="mute", clean=False,
                             properties={"session_expiry_interval": 60})
    publisher = _publisher(mqtt_client, broker.mqtt_port)
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


def test_a_nats_publisher_is_held_back_too_and_stops_mid_read(start_broker, mqtt_client):
    """300 NATS PUBs in one write to a slow QoS 1 MQTT subscriber: all arrive, in order."""
    broker = start_broker(**SETTINGS)
    subscriber = _subscriber(mqtt_client, broker.mqtt_port)
    publisher = RawClient(broker.port, timeout=20.0)
    publisher.handshake()
    publisher.send(b"".join(b"PUB flow.t %d\r\n%d\r\n" % (len(b"%d" % n), n) for n in range(COUNT)) + b"PING\r\n")
    assert _read_slowly(subscriber, COUNT) == [b"%d" % n for n in range(COUNT)]
    assert publisher.read_line() == b"PONG"
    publisher.close()


def test_a_publisher_that_reconnects_is_held_back_on_its_new_connection(start_broker, mqtt_client):
    """The hold is on the publisher's connection, not its session: a second
    connection of the same client id (a takeover) is held back as the first was."""
    broker = start_broker(**SETTINGS, **{"mqtt.stall_deadline": 5.0})
    subscriber = _subscriber(mqtt_client, broker.mqtt_port)
    first = _publisher(mqtt_client, broker.mqtt_port, clean=False)
    _blast(first, 20, b"first ")
    assert [subscriber.read_packet().payload for _ in range(2)] == [b"first 0", b"first 1"]  # held now, unread
    second = _publisher(mqtt_client, broker.mqtt_port, clean=False)  # takes the session over; the first's unread PUBLISHes are gone
    _blast(second, COUNT, b"second ")
    subscriber.send(P.Puback(1))
    subscriber.send(P.Puback(2))
    received = []
    while not received or received[-1] != b"second %d" % (COUNT - 1):
        received += _read_slowly(subscriber, 1)
    assert [payload for payload in received if payload.startswith(b"second")] == [
        b"second %d" % n for n in range(COUNT)]
    assert [second.read_packet() for _ in range(COUNT)] == [P.Puback(n + 1) for n in range(COUNT)]


def test_a_subscriber_that_goes_away_releases_its_publishers(start_broker, mqtt_client):
    """The subscriber holding a publisher back drops its connection (no
    DISCONNECT): the publisher goes on at once, every PUBLISH acknowledged."""
    broker = start_broker(**SETTINGS, **{"mqtt.stall_deadline": 30.0})
    subscriber = _subscriber(mqtt_client, broker.mqtt_port, P.MQTT_3_1_1)
    publisher = _publisher(mqtt_client, broker.mqtt_port)
    _blast(publisher, COUNT)
    assert subscriber.read_packet().payload == b"0"  # the publisher is held now
    subscriber.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    subscriber.close()  # a reset
    assert [publisher.read_packet() for _ in range(COUNT)] == [P.Puback(n + 1) for n in range(COUNT)]


def test_acknowledgements_of_nothing_do_not_keep_a_publisher_held(start_broker, mqtt_client):
    """PUBACKs for packet ids that were never in flight are no progress: the
    publisher is let go after stall_deadline all the same."""
    broker = start_broker(**SETTINGS, **{"mqtt.stall_deadline": 0.5})
    subscriber = _subscriber(mqtt_client, broker.mqtt_port, P.MQTT_3_1_1)
    publisher = _publisher(mqtt_client, broker.mqtt_port)
    _blast(publisher, COUNT)
    stop = threading.Event()

    def nag():
        while not stop.wait(0.1):
            subscriber.send(P.Puback(60000))  # an id never in flight

    thread = threading.Thread(target=nag)
    thread.start()
    try:
        acks = [publisher.read_packet() for _ in range(COUNT)]
    finally:
        stop.set()
        thread.join()
    assert acks == [P.Puback(n + 1) for n in range(COUNT)]
