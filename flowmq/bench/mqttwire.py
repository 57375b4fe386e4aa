"""MQTT client packets for the load generators, built and read with
``flowmq.mqtt.codec``: the CONNECT/SUBSCRIBE handshake, pre-encoded PUBLISH
frames, the framing of what a server sends, and the PINGREQ/PINGRESP round
trip after which a QoS 0 publisher knows the server has read everything it
sent (a server handles a connection's packets in order).

The workers connect with Clean Start and no keep alive (so the server
expects no PINGREQ from them, 5.0 §3.1.2.10) and no properties: the
server's defaults. The hot paths (``mqttcounter``) compare raw bytes; the
codec decodes the handshake and anything the fast paths do not recognise.
"""

from __future__ import annotations

import os
import socket
import time

from flowmq.bench.protocol import BenchError
from flowmq.mqtt import codec
from flowmq.mqtt.codec import packets as P
from flowmq.mqtt.codec.primitives import varint_at

#: --mqtt-version: the CONNECT protocol level of each.
LEVELS = {"3.1.1": P.MQTT_3_1_1, "5": P.MQTT_5}
PINGREQ = codec.encode(P.Pingreq(), P.MQTT_5)  # the same bytes at every level
#: The largest packet a worker accepts from a server (above the 1 MB payloads of --sizes).
MAX_PACKET = 64 * 1024 * 1024 + 65536


def client_id(role: str, slot: int) -> str:
    return "flowmq-bench-%s-%d-%d" % (role, os.getpid(), slot)


def publish_frame(topic: bytes, payload: bytes, qos: int, level: int, packet_id=None) -> bytes:
    """A PUBLISH without properties (MQTT 5: an empty property block)."""
    return codec.encode_publish(topic, payload, qos, packet_id=packet_id,
                                properties=b"\x00" if level == P.MQTT_5 else b"")


def packet_end(buf, pos: int, end: int) -> int:
    """Where the packet that starts at ``pos`` ends; 0 when ``buf[pos:end]``
    does not hold all of it yet. A Remaining Length of more than four bytes
    raises the codec's MalformedPacket."""
    found = varint_at(buf, pos + 1, end)
    if found is None:
        return 0
    length, body = found
    if body + length > end:
        return 0
    return body + length


class PacketReader:
    """Decodes whole packets (as ``packet_end`` frames them) with the codec,
    which also checks that the server sends them in a valid order."""

    def __init__(self, level: int):
        self.level = level
        self._decoder = codec.Decoder.for_client(level, MAX_PACKET)

    def decode(self, data: bytes):
        [packet] = self._decoder.feed(data)
        return packet


def _refusal(packet) -> str:
    reason = packet.properties.get("reason_string")
    return "0x%02X%s" % (packet.reason_code, " (%s)" % reason if reason else "")


def read_until(sock: socket.socket, reader: PacketReader, wanted, deadline: float, data: bytes = b""):
    """Read packets until one of each type in ``wanted`` (in that order) has
    come; returns ``(packets, rest)``: those packets and the bytes behind the
    last of them. A server DISCONNECT, a closed connection or the deadline
    (a monotonic time) raise BenchError."""
    found = []
    pos = 0
    for _ in range(1000000):
        stop = packet_end(data, pos, len(data))
        if stop:
            packet = reader.decode(bytes(data[pos:stop]))
            pos = stop
            if isinstance(packet, P.Disconnect):
                raise BenchError("the server sent DISCONNECT, reason %s" % _refusal(packet))
            if isinstance(packet, wanted[len(found)]):
                found.append(packet)
                if len(found) == len(wanted):
                    return found, data[pos:]
            continue
        data = data[pos:]
        pos = 0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            more = sock.recv(65536)
        except socket.timeout:
            break
        if not more:
            raise BenchError("connection closed by the server")
        data += more
    raise BenchError("no %s from the server in time" % wanted[len(found)].__name__.upper())


def handshake(sock: socket.socket, level: int, client: str, timeout: float, subscribe=None):
    """CONNECT, and with ``subscribe`` = (topic filter bytes, QoS) a
    SUBSCRIBE; wait for the CONNACK (and the SUBACK granting that QoS).
    Returns ``(connack, rest, reader)``: ``rest`` are the bytes that came
    after them. A refusal raises BenchError."""
    reader = PacketReader(level)
    out = codec.encode(P.Connect(level, client, True, 0), level)
    wanted = [P.Connack]
    if subscribe is not None:
        topic_filter, qos = subscribe
        out += codec.encode(P.Subscribe(1, [(topic_filter.decode("utf-8"), P.SubscriptionOptions(qos=qos))]),
                            level)
        wanted.append(P.Suback)
    sock.sendall(out)
    packets, rest = read_until(sock, reader, wanted, time.monotonic() + timeout)
    connack = packets[0]
    if connack.reason_code:
        raise BenchError("the server refused the connection: CONNACK %s" % _refusal(connack))
    if subscribe is not None and packets[1].reason_codes != [subscribe[1]]:
        raise BenchError("SUBSCRIBE at QoS %d answered with SUBACK %s"
                         % (subscribe[1], " ".join("0x%02X" % code for code in packets[1].reason_codes)))
    return connack, rest, reader


def ping(sock: socket.socket, reader: PacketReader, timeout: float) -> None:
    """PINGREQ, then wait for the PINGRESP: the server has read everything before it."""
    sock.sendall(PINGREQ)
    read_until(sock, reader, [P.Pingresp], time.monotonic() + timeout)
