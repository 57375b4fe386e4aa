"""What MQTT keeps across a broker restart and a crash (kill -9 of ``twistd
-n flowmq``): retained messages acknowledged with PUBACK, and persistent
sessions with their subscriptions and queued QoS 1 and 2 messages."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes

from pahoclient import V5, V311, Paho, properties


def _persistent(port, version, client_id):
    if version == V5:
        return Paho(port, V5, client_id, clean=False,
                    connect_properties=properties(PacketTypes.CONNECT, SessionExpiryInterval=3600))
    return Paho(port, V311, client_id, clean=False)


def test_retained_messages_survive_kill_9_after_puback(tmp_path, twistd):
    data_dir = tmp_path / "data"
    broker = twistd(data_dir, "first")
    publisher = Paho(broker.mqtt_port, V311)
    for n in range(50):
        publisher.publish("state/%d" % (n % 10), b"v%d" % n, 1, retain=True)  # PUBACK awaited each
    publisher.publish("state/cleared", b"x", 1, retain=True)
    publisher.publish("state/cleared", b"", 1, retain=True)
    broker.kill()
    again = twistd(data_dir, "second")
    subscriber = Paho(again.mqtt_port, V311)
    subscriber.subscribe("state/#", 1)
    got = {message.topic: message.payload for message in subscriber.receive(10)}
    assert got == {"state/%d" % n: b"v%d" % (40 + n) for n in range(10)}
    assert subscriber.nothing_more()
    subscriber.disconnect()
    again.stop()


def test_persistent_sessions_and_their_queued_messages_survive_kill_9(tmp_path, twistd):
    data_dir = tmp_path / "data"
    broker = twistd(data_dir, "first")
    for version, client_id in ((V311, "old-client"), (V5, "new-client")):
        client = _persistent(broker.mqtt_port, version, client_id)
        client.subscribe("work/#", 2)
        client.disconnect()
    publisher = Paho(broker.mqtt_port, V5)
    for n in range(20):
        publisher.publish("work/%d" % n, b"job %d" % n, 1 + n % 2)  # PUBACK / PUBCOMP awaited each
    broker.kill()
    again = twistd(data_dir, "second")
    clients = []
    for version, client_id in ((V311, "old-client"), (V5, "new-client")):
        client = _persistent(again.mqtt_port, version, client_id)
        assert client.flags.session_present
        got = sorted(message.payload for message in client.receive(20))
        assert got == sorted(b"job %d" % n for n in range(20))
        assert client.nothing_more()
        clients.append(client)
    # The subscriptions are back too: a new message arrives.
    live = Paho(again.mqtt_port, V311)
    live.publish("work/live", b"live", 1)
    for client in clients:
        assert client.next().payload == b"live"
        client.disconnect()
    live.disconnect()
    again.stop()
