"""A raw MQTT client over a plain socket, and fixtures for the MQTT wire tests.

Not a conftest.py: a second module named ``conftest`` would stand in for
tests/conftest.py in ``from conftest import ...`` of the other test folders.
A test module that uses the fixtures loads this one as a plugin:
``pytest_plugins = ("raw_mqtt",)``.

``MqttClient`` writes packets with the codec's ``encode`` (or raw bytes, for
inputs no encoder would make) and reads what the server sends one frame at
a time: ``read_frame`` gives the exact bytes, ``read_packet`` the packet the
client-side ``Decoder`` makes of them. ``read_until_closed`` returns every
byte the server sends before it closes the connection, and fails when it
does not close within the timeout.

``witness`` is a pair of clients (a 3.1.1 publisher and a v5 subscriber)
connected before the test's misbehaving client: ``witness.check()`` proves
that publish/subscribe still flows for them afterwards.
"""

from __future__ import annotations

import socket
import time

import pytest

from conftest import made_by
from flowmq.mqtt import codec
from flowmq.mqtt.codec import packets as P
from flowmq.mqtt.codec.primitives import varint_at

#: Generous: the CI machine has two loaded cores.
TIMEOUT = 20.0


class ServerClosed(Exception):
    """The server closed the connection while a frame was expected."""


class MqttClient:
    """A blocking MQTT client made of a socket, for byte-exact scenarios."""

    def __init__(self, port: int, level: int = P.MQTT_3_1_1, timeout: float = TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.level = level
        self.buffer = b""
        self.decoder = codec.Decoder.for_client(level)

    # -- output ----------------------------------------------------------------

    def send(self, data) -> None:
        """Send raw bytes, or a packet encoded at the client's level."""
        if not isinstance(data, bytes):
            data = codec.encode(data, self.level)
        self.sock.sendall(data)

    def send_slowly(self, data: bytes) -> None:
        """One byte per write, a short pause between them (no Nagle: one segment each)."""
        for index in range(len(data)):
            self.sock.sendall(data[index:index + 1])
            time.sleep(0.002)

    # -- input ------------------------------------------------------------------

    def _receive(self) -> bytes:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ServerClosed("closed by the server; unread: %r" % self.buffer)
        return chunk

    def read_frame(self) -> bytes:
        """The next packet the server sends, as its exact bytes."""
        while True:
            if len(self.buffer) >= 2:
                found = varint_at(self.buffer, 1, len(self.buffer))
                if found is not None:
                    length, body = found
                    if len(self.buffer) >= body + length:
                        frame, self.buffer = self.buffer[:body + length], self.buffer[body + length:]
                        return frame
            self.buffer += self._receive()

    def read_packet(self):
        """The next packet the server sends, decoded."""
        packets = self.decoder.feed(self.read_frame())
        assert len(packets) == 1, packets
        return packets[0]

    def read_unordered(self, count: int) -> list:
        """The next ``count`` packets, in packet type order (for answers whose
        order is not defined: a PUBACK and the delivery of the same PUBLISH)."""
        return sorted((self.read_packet() for _ in range(count)), key=lambda packet: packet.TYPE)

    def read_until_closed(self) -> bytes:
        """Every byte the server sends until it closes the connection."""
        data, self.buffer = self.buffer, b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            except socket.timeout:
                raise AssertionError("the server did not close the connection; it sent %r" % data) from None
            if not chunk:
                return data
            data += chunk

    def assert_open(self) -> None:
        """A PINGREQ is answered: the connection stays."""
        self.send(b"\xc0\x00")
        assert self.read_frame() == b"\xd0\x00"

    # -- the usual exchanges ----------------------------------------------------------

    def connect(self, client_id: str = "", clean: bool = True, keep_alive: int = 60, properties=P.NO_PROPERTIES,
                **fields) -> P.Connack:
        """CONNECT, and the CONNACK that accepts it."""
        self.send(P.Connect(self.level, client_id, clean, keep_alive, properties=properties, **fields))
        connack = self.read_packet()
        assert isinstance(connack, P.Connack) and connack.reason_code == 0, connack
        return connack

    def subscribe(self, topic_filter: str, qos: int = 0, packet_id: int = 1, **options) -> None:
        """SUBSCRIBE to one filter, and its SUBACK granting ``qos``."""
        self.send(P.Subscribe(packet_id, [(topic_filter, P.SubscriptionOptions(qos, **options))]))
        assert self.read_packet() == P.Suback(packet_id, [qos])

    def publish(self, topic: str, payload: bytes, qos: int = 0, packet_id=None, **fields) -> None:
        """PUBLISH, and at QoS 1 and 2 its whole acknowledgement flow."""
        if qos and packet_id is None:
            packet_id = 1
        self.send(P.Publish(topic, payload, qos, packet_id=packet_id, **fields))
        if qos == 1:
            assert self.read_packet() == P.Puback(packet_id)
        elif qos == 2:
            assert self.read_packet() == P.Pubrec(packet_id)
            self.send(P.Pubrel(packet_id))
            assert self.read_packet() == P.Pubcomp(packet_id)

    def _next_not_pubrel(self):
        """The next packet other than a PUBREL (each PUBREL is answered with its PUBCOMP)."""
        while True:
            packet = self.read_packet()
            if not isinstance(packet, P.Pubrel):
                return packet
            self.send(P.Pubcomp(packet.packet_id))

    def receive(self):
        """The next PUBLISH from the server, acknowledged at its QoS (PUBACK, or
        PUBREC and later, when its PUBREL comes, PUBCOMP)."""
        packet = self._next_not_pubrel()
        assert isinstance(packet, P.Publish), packet
        if packet.qos == 1:
            self.send(P.Puback(packet.packet_id))
        elif packet.qos == 2:
            self.send(P.Pubrec(packet.packet_id))
        return packet

    def settle(self) -> list:
        """A PINGREQ round trip: the packets that came before its PINGRESP (PUBRELs answered, not listed)."""
        self.send(b"\xc0\x00")
        others = []
        while True:
            packet = self._next_not_pubrel()
            if isinstance(packet, P.Pingresp):
                return others
            others.append(packet)

    def close(self) -> None:
        self.sock.close()


class Witness:
    """Two well-behaved clients that must keep working whatever another does."""

    def __init__(self, port: int, make):
        self.subscriber = make(P.MQTT_5, port)
        self.subscriber.connect("witness-sub")
        self.subscriber.subscribe("witness/+", qos=1)
        self.publisher = make(P.MQTT_3_1_1, port)
        self.publisher.connect("witness-pub")
        self.count = 0

    def check(self) -> None:
        """A QoS 1 message from the publisher reaches the subscriber."""
        self.count += 1
        payload = b"still here %d" % self.count
        self.publisher.publish("witness/t", payload, qos=1, packet_id=self.count)
        packet = self.subscriber.receive()
        assert (packet.topic, packet.payload) == ("witness/t", payload)


@pytest.fixture
def mqtt_client(request):
    """Make raw MQTT clients: ``mqtt_client(level=4, port=None)`` (the ``broker``'s MQTT port by default)."""
    def make(level: int = P.MQTT_3_1_1, port=None):
        if port is None:
            port = request.getfixturevalue("broker").mqtt_port
        return MqttClient(port, level)

    yield from made_by(make, MqttClient.close)


@pytest.fixture
def make_witness(mqtt_client):
    """``make_witness(port)``: a Witness on a broker of the test's own."""
    return lambda port: Witness(port, lambda level, at: mqtt_client(level, at))


@pytest.fixture
def witness(broker, make_witness):
    """A Witness connected to ``broker``."""
    return make_witness(broker.mqtt_port)
