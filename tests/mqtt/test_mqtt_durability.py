"""What MQTT keeps across a broker restart and a crash (kill -9 of ``twistd
-n flowmq``): retained messages acknowledged with PUBACK, and persistent
sessions with their subscriptions and queued QoS 1 and 2 messages; after a
graceful stop also the packet ids of their exchanges, and delayed Wills
are published at the stop."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes

from flowmq.mqtt.codec import packets as P
from pahoclient import V5, V311, Paho, properties
from raw_mqtt import MqttClient


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


def test_a_graceful_restart_keeps_the_packet_ids_of_qos_1_and_2_exchanges(tmp_path, twistd):
    """A stop with SIGTERM writes each persistent session's packet ids: after
    the restart the unacknowledged QoS 1 message goes again under its id with
    DUP, the PUBREL awaiting PUBCOMP goes again, and the client's QoS 2
    PUBLISH whose PUBREL had not come is answered, not published twice."""
    data_dir = tmp_path / "data"
    broker = twistd(data_dir, "first")
    expiry = {"session_expiry_interval": 3600}
    keeper = MqttClient(broker.mqtt_port, P.MQTT_5)
    keeper.connect("keeper", clean=False, properties=expiry)
    keeper.subscribe("ids/#", qos=2)
    publisher = MqttClient(broker.mqtt_port)
    publisher.connect("publisher")
    publisher.publish("ids/a", b"one", 1, packet_id=1)
    publisher.publish("ids/b", b"two", 2, packet_id=2)
    one = keeper.read_packet()  # not acknowledged
    two = keeper.read_packet()
    assert (one.payload, one.qos, two.payload, two.qos) == (b"one", 1, b"two", 2)
    keeper.send(P.Pubrec(two.packet_id))
    assert keeper.read_packet() == P.Pubrel(two.packet_id)  # no PUBCOMP
    keeper.send(P.Publish("other/c", b"three", 2, packet_id=7))
    assert keeper.read_packet() == P.Pubrec(7)  # no PUBREL
    keeper.close()
    publisher.close()
    broker.stop()

    again = twistd(data_dir, "second")
    watcher = MqttClient(again.mqtt_port)
    watcher.connect("watcher")
    watcher.subscribe("other/#", qos=2)
    keeper = MqttClient(again.mqtt_port, P.MQTT_5)
    keeper.send(P.Connect(P.MQTT_5, "keeper", False, 60, properties=expiry))
    assert keeper.read_packet().session_present
    resent = keeper.read_packet()
    assert (resent.packet_id, resent.dup, resent.qos, resent.payload) == (one.packet_id, True, 1, b"one")
    assert keeper.read_packet() == P.Pubrel(two.packet_id)
    keeper.send(P.Puback(one.packet_id))
    keeper.send(P.Pubcomp(two.packet_id))
    keeper.send(P.Publish("other/c", b"three", 2, dup=True, packet_id=7))  # its PUBREC was lost, say
    assert keeper.read_packet() == P.Pubrec(7)
    keeper.send(P.Pubrel(7))
    assert keeper.read_packet() == P.Pubcomp(7)
    assert keeper.settle() == []
    assert watcher.settle() == []  # "three" was published once, before the restart
    keeper.close()
    watcher.close()
    again.stop()


def test_a_will_waiting_for_its_delay_is_published_at_a_graceful_stop(tmp_path, twistd):
    """As mosquitto does: the clients are gone, and a restart would forget it."""
    data_dir = tmp_path / "data"
    broker = twistd(data_dir, "first")
    watcher = MqttClient(broker.mqtt_port)
    watcher.connect("watcher", clean=False)
    watcher.subscribe("wills/#", qos=1)
    watcher.close()
    client = MqttClient(broker.mqtt_port, P.MQTT_5)
    client.connect("mortal", properties={"session_expiry_interval": 3600},
                   will=P.Will("wills/mortal", b"gone", 1, properties={"will_delay_interval": 3600}))
    client.close()  # no DISCONNECT: the Will waits for its delay
    broker.stop()
    again = twistd(data_dir, "second")
    watcher = MqttClient(again.mqtt_port)
    watcher.send(P.Connect(P.MQTT_3_1_1, "watcher", False, 60))
    assert watcher.read_packet().session_present
    will = watcher.receive()
    assert (will.topic, will.payload) == ("wills/mortal", b"gone")
    assert watcher.settle() == []
    watcher.close()
    again.stop()
