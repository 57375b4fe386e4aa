"""Payload bytes on their way through the broker, over real sockets: a
payload that arrives split over many reads reaches every subscriber of a
fan-out intact (NATS and MQTT subscribers of a NATS or an MQTT publisher),
and a subscriber that takes its bytes slowly, so that the broker's writes
to it go out in part and the rest waits in pieces, gets every frame
byte for byte and in order.

The sizes straddle the broker's thresholds: payloads below
``PAYLOAD_PIECE_AT`` are copied into their frame, larger ones go by
reference, and batches with one of ``GATHER_WRITE_AT`` bytes or more are
written with sendmsg (``flowmq.connection``, ``flowmq.transport``).
"""

from __future__ import annotations

import random
import socket
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import RawClient
from flowmq.connection import GATHER_WRITE_AT, PAYLOAD_PIECE_AT
from flowmq.mqtt import codec
from flowmq.mqtt.codec import packets as P
from raw_mqtt import MqttClient

SIZES = (0, 7, PAYLOAD_PIECE_AT - 1, PAYLOAD_PIECE_AT, 1024, GATHER_WRITE_AT, 70000, 300000)
#: Between two pieces of one publish: long enough for the broker to read them apart.
PIECE_PAUSE = 0.003


def _payload(size: int, seed: int) -> bytes:
    """Random bytes with a NATS frame and an MQTT fixed header inside, to
    catch a parser that looks into a payload."""
    data = (random.Random(seed).randbytes(4096) * (size // 4096 + 1))[:size]
    if size > 40:
        middle = size // 2
        data = data[:middle] + b"\r\nPUB x 5\r\n\x30\x05" + data[middle + 12:]
    return data[:size]


def _nats_subscriber(port: int, sid: bytes) -> RawClient:
    client = RawClient(port, timeout=20)
    client.handshake()
    client.subscribe(b"big.x", sid)
    return client


def _nats_payload(client: RawClient, sid: bytes) -> bytes:
    line = client.read_line().split()
    assert line[:3] == [b"MSG", b"big.x", sid], line
    payload = client.read_exact(int(line[-1]))
    assert client.read_exact(2) == b"\r\n"
    return payload


def _mqtt_subscriber(port: int) -> MqttClient:
    client = MqttClient(port, P.MQTT_5)
    client.connect("payload-sub")
    client.subscribe("big/x")
    return client


def _send_in_pieces(sock, frame: bytes, cuts) -> None:
    for start, stop in zip([0] + cuts, cuts + [len(frame)]):
        sock.sendall(frame[start:stop])
        time.sleep(PIECE_PAUSE)


def test_a_payload_split_over_many_reads_reaches_every_subscriber_of_a_fanout_intact(broker):
    nats_subscribers = [_nats_subscriber(broker.port, sid) for sid in (b"1", b"77")]
    mqtt_subscriber = _mqtt_subscriber(broker.mqtt_port)
    nats_publisher = RawClient(broker.port)
    nats_publisher.handshake()
    nats_publisher.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    mqtt_publisher = MqttClient(broker.mqtt_port)
    mqtt_publisher.connect("payload-pub")

    @settings(max_examples=25)
    @given(size=st.sampled_from(SIZES), seed=st.integers(0, 1 << 30), over_mqtt=st.booleans(), data=st.data())
    def check(size, seed, over_mqtt, data):
        payload = _payload(size, seed)
        if over_mqtt:
            frame, sock = codec.encode_publish(b"big/x", payload), mqtt_publisher.sock
        else:
            frame, sock = b"PUB big.x %d\r\n%s\r\n" % (size, payload), nats_publisher.sock
        cuts = sorted(set(data.draw(st.lists(st.integers(1, len(frame) - 1), max_size=6), label="cuts")))
        _send_in_pieces(sock, frame, cuts)
        for client, sid in zip(nats_subscribers, (b"1", b"77")):
            assert _nats_payload(client, sid) == payload
        packet = mqtt_subscriber.receive()
        assert (packet.topic, packet.payload) == ("big/x", payload)

    try:
        check()
    finally:
        for client in nats_subscribers + [mqtt_subscriber, nats_publisher, mqtt_publisher]:
            client.close()


def test_a_slow_subscriber_gets_every_large_frame_whole_and_in_order_after_partial_writes(broker):
    # Small receive buffers, read while the publisher sends more than the
    # kernel's send buffers take (Linux grows them to 4 MB): the broker's
    # writes to these subscribers stop part-way through frames, and the
    # rest waits in its buffers.
    nats_subscriber = RawClient(broker.port, timeout=20, rcvbuf=65536)
    nats_subscriber.handshake()
    nats_subscriber.subscribe(b"big.x")
    mqtt_subscriber = MqttClient(broker.mqtt_port, P.MQTT_5)
    mqtt_subscriber.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    mqtt_subscriber.connect("slow-sub")
    mqtt_subscriber.subscribe("big/x")
    publisher = RawClient(broker.port, timeout=60)  # held back while the subscribers catch up
    publisher.handshake()
    sizes = (1000000, 1, 70000, GATHER_WRITE_AT, 0, 999999, PAYLOAD_PIECE_AT, 300000, 1000) * 6
    payloads = [_payload(size, seed) for seed, size in enumerate(sizes)]
    received = {"nats": [], "mqtt": []}
    readers = [
        threading.Thread(target=lambda: received["nats"].extend(
            _nats_payload(nats_subscriber, b"1") for _ in payloads)),
        threading.Thread(target=lambda: received["mqtt"].extend(
            mqtt_subscriber.receive().payload for _ in payloads)),
    ]
    try:
        for reader in readers:
            reader.start()
        for payload in payloads:
            publisher.send(b"PUB big.x %d\r\n%s\r\n" % (len(payload), payload))
        for reader in readers:
            reader.join(60)
        assert received["nats"] == payloads
        assert received["mqtt"] == payloads
    finally:
        for client in (nats_subscriber, mqtt_subscriber, publisher):
            client.close()
