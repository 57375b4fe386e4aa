"""The MQTT workers' fast counters (``counter.StreamCounter`` subclasses).

``PublishCounter`` counts the PUBLISHes a subscriber gets. In a run they all
have one topic, QoS and payload size, so they are frames of one length F;
for a run of k of them it checks that each starts with the PUBLISH byte of
that QoS (one strided slice), and the header of the first and of the last.
At QoS 1 it owes a PUBACK for each: the packet ids are cut out of the run
with two more strided slices and laid into k PUBACKs at once.

``AckCounter`` counts the PUBACKs a QoS 1 publisher gets. A server sends
them in the order of the PUBLISHes (MQTT-4.6.0-2), and the publisher's
packet ids cycle through 1..ids, so the next k PUBACKs are known bytes: one
comparison per read.

Anything else goes through the codec one packet at a time: a PUBLISH of
the run's topic, QoS and size counts however it is written (with
properties, say), one of another topic, QoS or size or a redelivery (DUP)
is counted apart (``other``); a DISCONNECT, a PUBACK out of order or a
packet a client does not expect is an error, a refused PUBACK is counted.
"""

from __future__ import annotations

from flowmq.bench import mqttwire
from flowmq.bench.counter import StreamCounter
from flowmq.bench.protocol import payload
from flowmq.mqtt.codec import packets as P
from flowmq.mqtt.codec.primitives import U16

_PUBACK_HEAD = b"\x40\x02"  # a PUBACK with reason Success and no properties (5.0 §3.4.2.1)


def puback(packet_id: int) -> bytes:
    return _PUBACK_HEAD + U16.pack(packet_id)


def _describe(packet) -> str:
    reason = getattr(packet, "reason_code", None)
    return "%s%s" % (type(packet).__name__.upper(), "" if reason is None else " reason 0x%02X" % reason)


class PublishCounter(StreamCounter):
    """Counts the PUBLISHes of ``topic`` with ``size`` bytes of payload at
    ``qos`` (0 or 1) that a subscriber gets."""

    def __init__(self, topic: bytes, size: int, qos: int, reader: mqttwire.PacketReader, bufsize: int = 1 << 20):
        frame = mqttwire.publish_frame(topic, payload(size), qos, reader.level, 1 if qos else None)
        StreamCounter.__init__(self, len(frame), bufsize)
        self.topic = topic.decode("utf-8")
        self.size = size
        self.qos = qos
        self.reader = reader
        self.first = frame[0]
        body = len(frame) - size
        if qos:
            self.id_at = body - 2 - (1 if reader.level == P.MQTT_5 else 0)  # the packet id, then properties
            self.head = frame[:self.id_at]
            self.tail = frame[self.id_at + 2:body]
        else:
            self.head = frame[:body]

    def _bulk(self, pos: int, k: int) -> bool:
        buf = self._buf
        frame = self.frame_len
        end = pos + k * frame
        last = end - frame
        if buf[pos:end:frame].count(self.first) != k:
            return False
        if not (buf.startswith(self.head, pos) and buf.startswith(self.head, last)):
            return False
        if self.qos:
            at = self.id_at
            if self.tail and not (buf.startswith(self.tail, pos + at + 2) and buf.startswith(self.tail, last + at + 2)):
                return False
            acks = bytearray(_PUBACK_HEAD + b"\x00\x00") * k
            acks[2::4] = buf[pos + at:end:frame]
            acks[3::4] = buf[pos + at + 1:end:frame]
            self._reply.append(bytes(acks))
        return True

    def _one(self, pos: int, fill: int) -> int:
        stop = mqttwire.packet_end(self._buf, pos, fill)
        if not stop:
            return 0
        packet = self.reader.decode(bytes(self._buf[pos:stop]))
        if isinstance(packet, P.Publish):
            if (packet.topic == self.topic and len(packet.payload) == self.size and packet.qos == self.qos
                    and not packet.dup):
                self.count += 1
            else:
                self.other += 1
            if packet.qos == 1:
                self._reply.append(puback(packet.packet_id))
            elif packet.qos == 2:
                self.errors.append("a QoS 2 PUBLISH on a QoS %d subscription" % self.qos)
        elif isinstance(packet, P.Disconnect):
            self.errors.append("the server sent DISCONNECT, reason 0x%02X" % packet.reason_code)
        elif not isinstance(packet, P.Pingresp):
            self.errors.append("unexpected %s from the server" % _describe(packet))
        return stop - pos


class AckCounter(StreamCounter):
    """Counts the PUBACKs of a publisher whose n-th PUBLISH (from 0) has
    packet id ``n % ids + 1``, with at most ``window`` unacknowledged."""

    def __init__(self, ids: int, window: int, reader: mqttwire.PacketReader):
        StreamCounter.__init__(self, 4, 65536)
        self.ids = ids
        self.reader = reader
        self.refused = 0  # PUBACKs with a reason code of 0x80 or more (counted, in order)
        # Every PUBACK in order, and the first ``window`` again: a read never
        # holds more than ``window`` of them, so a wrap-around is one slice.
        self._expected = b"".join(puback(i) for i in range(1, ids + 1)) + b"".join(
            puback(i) for i in range(1, min(window, ids) + 1))

    def _bulk(self, pos: int, k: int) -> bool:
        at = (self.count % self.ids) * 4
        n = 4 * k
        return at + n <= len(self._expected) and self._buf[pos:pos + n] == self._expected[at:at + n]

    def _one(self, pos: int, fill: int) -> int:
        stop = mqttwire.packet_end(self._buf, pos, fill)
        if not stop:
            return 0
        packet = self.reader.decode(bytes(self._buf[pos:stop]))
        if isinstance(packet, P.Puback):
            want = self.count % self.ids + 1
            if packet.packet_id != want:
                self.errors.append("PUBACK for packet id %d, expected %d (out of order, MQTT-4.6.0-2)"
                                   % (packet.packet_id, want))
            else:
                self.count += 1
                if packet.reason_code >= 0x80:
                    self.refused += 1
        elif isinstance(packet, P.Disconnect):
            self.errors.append("the server sent DISCONNECT, reason 0x%02X" % packet.reason_code)
        else:
            self.errors.append("unexpected %s from the server" % _describe(packet))
        return stop - pos

