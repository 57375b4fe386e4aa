"""MQTT 5 with paho-mqtt: user properties, response topic and correlation
data, content type and payload format, message expiry, subscription
identifiers and options (No Local, Retain As Published, Retain Handling),
topic aliases from the client, and the CONNACK's properties."""

from __future__ import annotations

import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from pahoclient import V5, Paho, properties


def test_publish_properties_reach_the_subscriber(broker):
    subscriber = Paho(broker.mqtt_port, V5)
    subscriber.subscribe("props", 1)
    publisher = Paho(broker.mqtt_port, V5)
    props = properties(UserProperty=[("source", "test"), ("source", "again"), ("k", "v")],
                       ResponseTopic="replies/here", CorrelationData=b"\x00\x01id",
                       ContentType="application/json", PayloadFormatIndicator=1)
    publisher.publish("props", b'{"a": 1}', 1, props=props)
    got = subscriber.next().properties
    assert got.UserProperty == [("source", "test"), ("source", "again"), ("k", "v")]  # order kept (MQTT-3.3.2-18)
    assert got.ResponseTopic == "replies/here"
    assert got.CorrelationData == b"\x00\x01id"
    assert got.ContentType == "application/json"
    assert got.PayloadFormatIndicator == 1
    subscriber.disconnect()
    publisher.disconnect()


def test_message_expiry_is_counted_down_and_expired_messages_are_dropped(broker):
    session = properties(PacketTypes.CONNECT, SessionExpiryInterval=600)
    away = Paho(broker.mqtt_port, V5, "expiring", clean=False, connect_properties=session)
    away.subscribe("exp/#", 1)
    away.disconnect()
    publisher = Paho(broker.mqtt_port, V5)
    publisher.publish("exp/short", b"short", 1, props=properties(MessageExpiryInterval=1))
    publisher.publish("exp/long", b"long", 1, props=properties(MessageExpiryInterval=100))
    time.sleep(2.2)
    back = Paho(broker.mqtt_port, V5, "expiring", clean=False, connect_properties=session)
    got = back.next()
    assert got.payload == b"long"
    assert 95 <= got.properties.MessageExpiryInterval < 100  # what is left (5.0 §3.3.2.3.3)
    assert back.nothing_more()
    back.disconnect()
    publisher.disconnect()


def test_overlapping_subscriptions_send_one_publish_with_every_identifier(broker):
    subscriber = Paho(broker.mqtt_port, V5)
    subscriber.subscribe("ids/#", 1, props=properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    subscriber.subscribe("ids/+/x", 1, props=properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=9))
    subscriber.subscribe("ids/a/#", 1)  # without an identifier
    publisher = Paho(broker.mqtt_port, V5)
    publisher.publish("ids/a/x", b"both", 1)
    got = subscriber.next()
    assert sorted(got.properties.SubscriptionIdentifier) == [7, 9]
    assert subscriber.nothing_more()
    subscriber.disconnect()
    publisher.disconnect()


def test_no_local_keeps_a_clients_own_messages_from_it(broker):
    client = Paho(broker.mqtt_port, V5)
    client.subscribe("chat", options=SubscribeOptions(qos=1, noLocal=True))
    other = Paho(broker.mqtt_port, V5)
    client.publish("chat", b"mine", 1)
    other.publish("chat", b"theirs", 1)
    assert client.next().payload == b"theirs"
    assert client.nothing_more()
    client.disconnect()
    other.disconnect()


def test_retain_as_published_keeps_the_flag_on_live_messages(broker):
    keeps = Paho(broker.mqtt_port, V5)
    keeps.subscribe("rap", options=SubscribeOptions(qos=1, retainAsPublished=True))
    plain = Paho(broker.mqtt_port, V5)
    plain.subscribe("rap", 1)
    publisher = Paho(broker.mqtt_port, V5)
    publisher.publish("rap", b"r", 1, retain=True)
    assert keeps.next().retain is True
    assert plain.next().retain is False
    for client in (keeps, plain, publisher):
        client.disconnect()


def test_retain_handling_0_1_2(broker):
    publisher = Paho(broker.mqtt_port, V5)
    publisher.publish("rh", b"kept", 1, retain=True)
    always = Paho(broker.mqtt_port, V5)
    always.subscribe("rh", options=SubscribeOptions(qos=1, retainHandling=0))
    always.subscribe("rh", options=SubscribeOptions(qos=1, retainHandling=0))  # again: sent again
    assert [m.payload for m in always.receive(2)] == [b"kept", b"kept"]
    if_new = Paho(broker.mqtt_port, V5)
    if_new.subscribe("rh", options=SubscribeOptions(qos=1, retainHandling=1))
    if_new.subscribe("rh", options=SubscribeOptions(qos=1, retainHandling=1))  # exists: not sent
    assert if_new.next().payload == b"kept"
    assert if_new.nothing_more()
    never = Paho(broker.mqtt_port, V5)
    never.subscribe("rh", options=SubscribeOptions(qos=1, retainHandling=2))
    assert never.nothing_more()
    for client in (publisher, always, if_new, never):
        client.disconnect()


def test_topic_aliases_from_the_client(broker):
    subscriber = Paho(broker.mqtt_port, V5)
    subscriber.subscribe("alias/#", 0)
    publisher = Paho(broker.mqtt_port, V5)
    assert publisher.connack_properties.TopicAliasMaximum == 10
    publisher.publish("alias/long/topic", b"first", 1, props=properties(TopicAlias=3))
    publisher.publish("", b"second", 1, props=properties(TopicAlias=3))
    assert [(m.topic, m.payload) for m in subscriber.receive(2)] == [
        ("alias/long/topic", b"first"), ("alias/long/topic", b"second")]
    subscriber.disconnect()
    publisher.disconnect()


def test_topic_aliases_to_a_client_that_allows_them(broker):
    subscriber = Paho(broker.mqtt_port, V5,
                      connect_properties=properties(PacketTypes.CONNECT, TopicAliasMaximum=2))
    subscriber.subscribe("aliased/#", 0)
    publisher = Paho(broker.mqtt_port, V5)
    for topic in ("aliased/one", "aliased/two", "aliased/three", "aliased/one", "aliased/two"):
        publisher.publish(topic, topic.encode(), 1)
    got = subscriber.receive(5)
    # The first two topics get aliases 1 and 2 (set up with the topic, then the alias alone:
    # paho hands the empty topic over as it is), the third goes as it is.
    assert [(m.topic, m.payload) for m in got] == [
        ("aliased/one", b"aliased/one"), ("aliased/two", b"aliased/two"), ("aliased/three", b"aliased/three"),
        ("", b"aliased/one"), ("", b"aliased/two")]
    assert [getattr(m.properties, "TopicAlias", None) for m in got] == [1, 2, None, 1, 2]
    subscriber.disconnect()
    publisher.disconnect()


def test_connack_announces_the_servers_limits(broker):
    client = Paho(broker.mqtt_port, V5)
    props = client.connack_properties
    assert props.ReceiveMaximum == 20
    assert props.TopicAliasMaximum == 10
    assert props.MaximumPacketSize >= 1048576
    client.disconnect()


def test_request_and_response_between_mqtt5_clients(broker):
    responder = Paho(broker.mqtt_port, V5)
    responder.subscribe("service/time", 1)
    requester = Paho(broker.mqtt_port, V5)
    requester.subscribe("replies/me", 1)
    requester.publish("service/time", b"what time?", 1,
                      props=properties(ResponseTopic="replies/me", CorrelationData=b"req-1"))
    request = responder.next()
    responder.publish(request.properties.ResponseTopic, b"noon", 1,
                      props=properties(CorrelationData=request.properties.CorrelationData))
    reply = requester.next()
    assert (reply.payload, reply.properties.CorrelationData) == (b"noon", b"req-1")
    responder.disconnect()
    requester.disconnect()
