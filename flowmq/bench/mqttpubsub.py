"""The MQTT worker processes of the throughput scenarios, the MQTT twins of
``pubsub``'s (same arguments, same reports, same barrier).

``opts`` carries, besides the connection options, ``mqtt_level`` (4 or 5)
and ``mqtt_qos`` (0 or 1) and, for a QoS 1 publisher, ``mqtt_window``.

- A QoS 0 publisher sends pre-built batches of PUBLISH frames
  (``pubsub.send_batches``), then PINGREQ and waits for the PINGRESP.
- A QoS 1 publisher keeps up to ``mqtt_window`` PUBLISHes unacknowledged,
  or the server's Receive Maximum if lower (5.0 §3.3.4: a client must not
  have more in flight). It counts PUBACKs with ``mqttcounter.AckCounter``;
  each read's PUBACKs let as many new PUBLISHes go at once, sent as one
  slice of a pre-built block of frames whose packet ids cycle. (Waiting
  for a quarter of the window to be free instead saved CPU but stalled
  mosquitto, which leaves Nagle's algorithm on: its next PUBACK waited for
  the TCP ACK of the last one, which the publisher, having nothing to send,
  delayed: mosquitto fell from about 25,000 to 3,000-13,000 msgs/s.)
- A subscriber SUBSCRIBEs at ``mqtt_qos`` and counts PUBLISHes with
  ``mqttcounter.PublishCounter`` (``pubsub.receive``), acknowledging each
  QoS 1 one with the PUBACKs of a read in one send. At QoS 0 it naps 1 ms
  after a small read (``pubsub.receive``): mosquitto writes each message
  on its own, and reading them one by one cost the subscriber about as much
  CPU as the server spent.
"""

from __future__ import annotations

import socket
import time

from flowmq.bench import mqttwire, protocol, pubsub
from flowmq.bench.mqttcounter import AckCounter, PublishCounter
from flowmq.bench.worker import Envelope

# Seconds a QoS 0 subscriber sleeps after a small read (``pubsub.receive``).
_NAP = 0.001
# The pre-built frames of a QoS 1 publisher: about this many bytes (packet ids 1..65535 at most).
_BLOCK_BYTES = 4 * 1024 * 1024


def publisher(slot, opts, topic, size, count, barrier, stop, counters, results):
    result = pubsub.new_publisher_result(slot)
    with Envelope("publisher", barrier, results, result) as env:
        sock = env.connect(opts["host"], opts["port"])
        level, qos = opts["mqtt_level"], opts["mqtt_qos"]
        connack, rest, reader = mqttwire.handshake(sock, level, mqttwire.client_id("pub", slot),
                                                   opts["setup_timeout"])
        if qos:
            window = min(opts["mqtt_window"], connack.properties.get("receive_maximum", 65535))
            result.update(acked=0, refused=0, window=window)
            acks = AckCounter(_ids(topic, size, level, window), window, reader)
            block = _block(topic, size, level, acks.ids)
            env.start(opts["setup_timeout"])
            _publish_window(sock, acks, block, count, window, opts, stop, counters, slot, result)
        else:
            env.start(opts["setup_timeout"])
            pubsub.send_batches(sock, mqttwire.publish_frame(topic, protocol.payload(size), 0, level), count,
                                opts, stop, counters, slot, result)
            mqttwire.ping(sock, reader, opts["idle_timeout"] + opts["send_timeout"])
            result["end"] = time.monotonic()


def _ids(topic: bytes, size: int, level: int, window: int) -> int:
    """How many packet ids the publisher cycles through: as many frames as
    fit in _BLOCK_BYTES, at least ``window``, at most 65,535."""
    frame_len = len(mqttwire.publish_frame(topic, protocol.payload(size), 1, level, 1))
    return min(65535, max(window, _BLOCK_BYTES // frame_len))


def _block(topic: bytes, size: int, level: int, ids: int) -> memoryview:
    """The QoS 1 PUBLISHes with packet ids 1..ids, back to back (built before the barrier)."""
    data = protocol.payload(size)
    return memoryview(b"".join(mqttwire.publish_frame(topic, data, 1, level, i) for i in range(1, ids + 1)))


def _publish_window(sock, acks, block, count, window, opts, stop, counters, slot, result) -> None:
    ids = acks.ids
    frame_len = len(block) // ids
    sock.settimeout(opts["idle_timeout"])
    deadline = time.monotonic() + opts["max_time"]
    result["start"] = time.monotonic()
    sent = 0
    stopped = None
    for turn in range(4 * count + 10):  # each turn reads at least one PUBACK (or ends the loop)
        if acks.count >= count:
            break
        room = min(window - (sent - acks.count), count - sent)
        if room > 0:
            first = sent % ids
            last = first + room
            if last <= ids:
                sock.sendall(block[first * frame_len:last * frame_len])
            else:
                sock.sendall(block[first * frame_len:])
                sock.sendall(block[:(last - ids) * frame_len])
            sent += room
            counters[slot] = result["sent"] = sent
            if sent == count:
                result["sent_end"] = time.monotonic()
        try:
            n = acks.recv(sock)
        except socket.timeout:
            stopped = "no PUBACK for %.0f s" % opts["idle_timeout"]
            break
        result["acked"] = acks.count
        if not n:
            stopped = "connection closed by the server"
        elif acks.errors:
            stopped = "; ".join(acks.errors[:3])
        elif not turn & 63:
            if time.monotonic() > deadline:
                stopped = "ran out of time (--max-time)"
            elif stop.is_set():
                stopped = "the subscribers gave up"
        if stopped:
            break
    result["end"] = time.monotonic()
    result.update(acked=acks.count, refused=acks.refused)
    if stopped:
        result["errors"].append("publisher: stopped after %d of %d PUBACKs: %s" % (acks.count, count, stopped))
    if acks.refused:
        result["errors"].append("publisher: %d PUBLISHes refused (PUBACK reason 0x80 or more)" % acks.refused)


def subscriber(slot, opts, topic, size, expected, barrier, stop, counters, results):
    """``expected``: the count this subscriber stops at."""
    result = pubsub.new_subscriber_result(slot)
    with Envelope("subscriber", barrier, results, result) as env:
        sock = env.connect(opts["host"], opts["port"])
        qos = opts["mqtt_qos"]
        _connack, rest, reader = mqttwire.handshake(sock, opts["mqtt_level"], mqttwire.client_id("sub", slot),
                                                    opts["setup_timeout"], subscribe=(topic, qos))
        counter = PublishCounter(topic, size, qos, reader)
        counter.feed(rest)
        env.start(opts["setup_timeout"])
        pubsub.receive(sock, counter, opts, expected, stop, counters, slot, env, 0.0 if qos else _NAP)
        result["errors"].extend("subscriber: %s" % e for e in counter.errors)
