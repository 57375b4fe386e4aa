"""Publish and subscribe with paho-mqtt, MQTT 3.1.1 and 5.0: the three QoS
levels both ways, wildcards, overlapping subscriptions, unsubscribe, and
retained messages (set, replace, clear, on wildcard subscriptions)."""

from __future__ import annotations

import pytest

from pahoclient import VERSIONS, Paho


@pytest.fixture(params=VERSIONS, ids=["v311", "v5"])
def version(request):
    return request.param


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_a_message_arrives_at_the_lower_of_publish_and_subscription_qos(broker, version, qos):
    subscriber = Paho(broker.mqtt_port, version)
    assert subscriber.subscribe("sensors/temperature", 2)[0].value == 2
    low = Paho(broker.mqtt_port, version)
    assert low.subscribe("sensors/temperature", 1)[0].value == 1
    publisher = Paho(broker.mqtt_port, version)
    publisher.publish("sensors/temperature", b"22.5", qos)
    got = subscriber.next()
    assert (got.topic, got.payload, got.qos, got.retain) == ("sensors/temperature", b"22.5", qos, False)
    assert low.next().qos == min(qos, 1)
    for client in (subscriber, low, publisher):
        client.disconnect()


def test_wildcards_match_as_mqtt_says(broker, version):
    subscriber = Paho(broker.mqtt_port, version)
    subscriber.subscribe("a/+/c", 0)
    subscriber.subscribe("x/#", 0)
    publisher = Paho(broker.mqtt_port, version)
    for topic in ("a/b/c", "a/b/d", "a/b/c/d", "x", "x/y/z", "a//c", "$SYS/x"):
        publisher.publish(topic, topic.encode(), 1)
    got = sorted(message.topic for message in subscriber.receive(4))
    assert got == ["a//c", "a/b/c", "x", "x/y/z"]  # 'x/#' matches its parent (MQTT-4.7.1-2)
    assert subscriber.nothing_more()
    subscriber.disconnect()
    publisher.disconnect()


def test_hash_does_not_match_dollar_topics(broker, version):
    subscriber = Paho(broker.mqtt_port, version)
    subscriber.subscribe("#", 0)
    subscriber.subscribe("+/info", 0)
    explicit = Paho(broker.mqtt_port, version)
    explicit.subscribe("$SYS/#", 0)
    publisher = Paho(broker.mqtt_port, version)
    publisher.publish("$SYS/info", b"x", 1)
    assert explicit.next().topic == "$SYS/info"
    assert subscriber.nothing_more()  # MQTT-4.7.2-1
    for client in (subscriber, explicit, publisher):
        client.disconnect()


def test_overlapping_subscriptions_deliver_once_at_the_highest_qos(broker, version):
    subscriber = Paho(broker.mqtt_port, version)
    subscriber.subscribe("home/#", 0)
    subscriber.subscribe("home/+/light", 2)
    publisher = Paho(broker.mqtt_port, version)
    publisher.publish("home/kitchen/light", b"on", 2)
    got = subscriber.next()
    assert (got.topic, got.qos) == ("home/kitchen/light", 2)
    assert subscriber.nothing_more()
    subscriber.disconnect()
    publisher.disconnect()


def test_unsubscribe_stops_the_messages(broker, version):
    subscriber = Paho(broker.mqtt_port, version)
    subscriber.subscribe("t/1", 1)
    publisher = Paho(broker.mqtt_port, version)
    publisher.publish("t/1", b"before", 1)
    assert subscriber.next().payload == b"before"
    subscriber.unsubscribe("t/1")
    publisher.publish("t/1", b"after", 1)
    assert subscriber.nothing_more()
    subscriber.disconnect()
    publisher.disconnect()


def test_many_qos1_and_qos2_messages_arrive_in_order(broker, version):
    subscriber = Paho(broker.mqtt_port, version)
    subscriber.subscribe("seq/#", 2)
    publisher = Paho(broker.mqtt_port, version)
    infos = [publisher.client.publish("seq/%d" % (i % 3), b"%d" % i, 1 + i % 2) for i in range(300)]
    for info in infos:
        info.wait_for_publish(10)
    got = [(message.qos, int(message.payload)) for message in subscriber.receive(300)]
    # More than max_inflight: queued, and sent in order per QoS (MQTT-4.6.0-5 orders each QoS's
    # messages; paho hands a QoS 2 message over at PUBREL, later than a QoS 1 one sent after it).
    for qos in (1, 2):
        assert [n for q, n in got if q == qos] == [n for n in range(300) if 1 + n % 2 == qos]
    subscriber.disconnect()
    publisher.disconnect()


def test_retained_messages_set_replace_clear(broker, version):
    publisher = Paho(broker.mqtt_port, version)
    publisher.publish("status/door", b"open", 1, retain=True)
    publisher.publish("status/door", b"closed", 1, retain=True)
    publisher.publish("status/window", b"open", 0, retain=True)
    publisher.publish("status/lamp", b"on", 1, retain=True)
    publisher.publish("status/lamp", b"", 1, retain=True)  # an empty payload clears it (MQTT-3.3.1-6)
    late = Paho(broker.mqtt_port, version)
    late.subscribe("status/+", 1)
    got = {message.topic: (message.payload, message.qos, message.retain) for message in late.receive(2)}
    assert got == {"status/door": (b"closed", 1, True), "status/window": (b"open", 0, True)}
    assert late.nothing_more()
    # To an existing subscription a retained publish arrives with RETAIN 0 (MQTT-3.3.1-9).
    publisher.publish("status/door", b"ajar", 1, retain=True)
    got = late.next()
    assert (got.payload, got.retain) == (b"ajar", False)
    late.disconnect()
    publisher.disconnect()


def test_retained_messages_on_multilevel_wildcards(broker, version):
    publisher = Paho(broker.mqtt_port, version)
    for topic in ("r", "r/a", "r/a/b", "other", "$SYS/r"):
        publisher.publish(topic, topic.encode(), 1, retain=True)
    everything = Paho(broker.mqtt_port, version)
    everything.subscribe("#", 0)
    assert sorted(message.topic for message in everything.receive(4)) == ["other", "r", "r/a", "r/a/b"]
    below = Paho(broker.mqtt_port, version)
    below.subscribe("r/#", 0)
    assert sorted(message.topic for message in below.receive(3)) == ["r", "r/a", "r/a/b"]
    for client in (publisher, everything, below):
        client.disconnect()
