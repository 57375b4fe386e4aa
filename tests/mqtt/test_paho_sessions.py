"""Sessions with paho-mqtt: clean and persistent sessions (3.1.1 Clean
Session, 5.0 Clean Start and Session Expiry), what an absent persistent
session keeps, client id takeover, assigned client ids, Wills and the keep
alive."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from pahoclient import V5, V311, Paho, properties, stop_loop


def _expiry(seconds):
    return properties(PacketTypes.CONNECT, SessionExpiryInterval=seconds)


def _persistent(port, version, client_id):
    if version == V5:
        return Paho(port, V5, client_id, clean=False, connect_properties=_expiry(3600))
    return Paho(port, V311, client_id, clean=False)


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_a_persistent_session_keeps_subscriptions_and_qos1_messages_while_away(broker, version):
    first = _persistent(broker.mqtt_port, version, "keeper")
    assert not first.flags.session_present
    first.subscribe("jobs/#", 1)
    first.disconnect()
    publisher = Paho(broker.mqtt_port, version)
    publisher.publish("jobs/zero", b"qos 0 is not kept", 0)  # first: the PUBACKs below come after it
    for n in range(5):
        publisher.publish("jobs/%d" % n, b"job %d" % n, 1)
    again = _persistent(broker.mqtt_port, version, "keeper")
    assert again.flags.session_present
    assert [message.payload for message in again.receive(5)] == [b"job %d" % n for n in range(5)]
    assert again.nothing_more()
    publisher.publish("jobs/live", b"live", 1)  # the subscription is still there
    assert again.next().payload == b"live"
    again.disconnect()
    publisher.disconnect()


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_a_clean_session_forgets_everything(broker, version):
    first = _persistent(broker.mqtt_port, version, "forgetful")
    first.subscribe("news", 1)
    first.disconnect()
    clean = Paho(broker.mqtt_port, version, "forgetful", clean=True)
    assert not clean.flags.session_present
    publisher = Paho(broker.mqtt_port, version)
    publisher.publish("news", b"nobody listens", 1)
    assert clean.nothing_more()
    clean.disconnect()
    again = _persistent(broker.mqtt_port, version, "forgetful")
    assert not again.flags.session_present  # the clean session ended when it disconnected
    again.disconnect()
    publisher.disconnect()


def test_a_v5_session_ends_after_its_expiry_interval(broker):
    first = Paho(broker.mqtt_port, V5, "short-lived", clean=False, connect_properties=_expiry(1))
    first.subscribe("t", 1)
    first.disconnect()
    time.sleep(2.5)
    again = Paho(broker.mqtt_port, V5, "short-lived", clean=False, connect_properties=_expiry(60))
    assert not again.flags.session_present
    again.disconnect()


def test_a_v5_session_with_no_expiry_ends_at_disconnect(broker):
    first = Paho(broker.mqtt_port, V5, "no-expiry", clean=False)
    first.subscribe("t", 1)
    first.disconnect()
    again = Paho(broker.mqtt_port, V5, "no-expiry", clean=False)
    assert not again.flags.session_present
    again.disconnect()


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_a_second_connection_with_the_same_client_id_takes_over(broker, version):
    first = _persistent(broker.mqtt_port, version, "twin")
    first.subscribe("twin/topic", 1)
    second = _persistent(broker.mqtt_port, version, "twin")
    assert second.flags.session_present
    reason = first.disconnects.get(timeout=10)
    if version == V5:
        assert reason.value == 0x8E  # Session taken over (MQTT-3.1.4-3)
    stop_loop(first.client)
    publisher = Paho(broker.mqtt_port, version)
    publisher.publish("twin/topic", b"to the new one", 1)
    assert second.next().payload == b"to the new one"
    second.disconnect()
    publisher.disconnect()


@pytest.mark.parametrize("resume", [False, True], ids=["clean", "resumed"])
def test_a_taken_over_connections_will_goes_unless_the_session_is_resumed(broker, resume):
    watcher = Paho(broker.mqtt_port, V5)
    watcher.subscribe("wills/#", 1)
    first = Paho(broker.mqtt_port, V5, "taken", clean=False, connect_properties=_expiry(60),
                 will=_will("wills/taken", b"first is gone"))
    second = Paho(broker.mqtt_port, V5, "taken", clean=not resume, connect_properties=_expiry(60))
    assert first.disconnects.get(timeout=10).value == 0x8E
    if resume:
        assert watcher.nothing_more(1.0)
    else:
        assert watcher.next().payload == b"first is gone"
    stop_loop(first.client)
    second.disconnect()
    watcher.disconnect()


def test_an_empty_client_id_is_assigned_one_in_v5(broker):
    client = Paho(broker.mqtt_port, V5, "")
    assigned = client.connack_properties.AssignedClientIdentifier
    assert assigned
    client.subscribe("mine", 0)
    client.publish("mine", b"x", 0)
    assert client.next().payload == b"x"
    client.disconnect()


def _will(topic, payload, qos=1, retain=False, props=None):
    return {"topic": topic, "payload": payload, "qos": qos, "retain": retain, "properties": props}


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_the_will_goes_when_the_connection_drops_not_after_disconnect(broker, version):
    watcher = Paho(broker.mqtt_port, version)
    watcher.subscribe("wills/#", 1)
    dropping = Paho(broker.mqtt_port, version, "dropping", will=_will("wills/dropping", b"gone"))
    polite = Paho(broker.mqtt_port, version, "polite", will=_will("wills/polite", b"gone too"))
    polite.disconnect()
    dropping.drop()
    got = watcher.next()
    assert (got.topic, got.payload) == ("wills/dropping", b"gone")
    assert watcher.nothing_more()
    watcher.disconnect()


def test_a_v5_disconnect_with_will_message_sends_the_will(broker):
    watcher = Paho(broker.mqtt_port, V5)
    watcher.subscribe("wills/#", 1)
    client = Paho(broker.mqtt_port, V5, "leaving", will=_will("wills/leaving", b"bye"))
    client.client.disconnect(reasoncode=_reason(4))
    assert watcher.next().payload == b"bye"
    watcher.disconnect()


def _reason(value):
    from paho.mqtt.reasoncodes import ReasonCode
    return ReasonCode(PacketTypes.DISCONNECT, identifier=value)


def test_a_will_delay_waits_and_a_reconnection_cancels_it(broker):
    watcher = Paho(broker.mqtt_port, V5)
    watcher.subscribe("wills/#", 1)
    delay = properties(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    comes_back = Paho(broker.mqtt_port, V5, "comes-back", clean=False, connect_properties=_expiry(60),
                      will=_will("wills/comes-back", b"not sent", props=delay))
    stays_away = Paho(broker.mqtt_port, V5, "stays-away", clean=False, connect_properties=_expiry(60),
                      will=_will("wills/stays-away", b"sent late", props=delay))
    comes_back.drop()
    stays_away.drop()
    started = time.monotonic()
    back = Paho(broker.mqtt_port, V5, "comes-back", clean=False, connect_properties=_expiry(60))
    got = watcher.next(timeout=15)
    assert got.payload == b"sent late"
    assert time.monotonic() - started >= 1.5
    assert watcher.nothing_more(1.0)
    back.disconnect()
    watcher.disconnect()


def test_a_will_delay_longer_than_the_session_ends_with_the_session(broker):
    watcher = Paho(broker.mqtt_port, V5)
    watcher.subscribe("wills/#", 1)
    delay = properties(PacketTypes.WILLMESSAGE, WillDelayInterval=30)
    for expiry, payload in ((0, b"session over at once"), (1, b"session over after 1 s")):
        client = Paho(broker.mqtt_port, V5, "short-session", connect_properties=_expiry(expiry),
                      will=_will("wills/short", payload, props=delay))
        client.drop()
        started = time.monotonic()
        assert watcher.next(timeout=15).payload == payload  # 5.0 §3.1.3.2.2: whichever comes first
        assert time.monotonic() - started < 10
    watcher.disconnect()


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_a_client_silent_for_one_and_a_half_keep_alives_is_closed_and_its_will_sent(broker, version):
    watcher = Paho(broker.mqtt_port, version)
    watcher.subscribe("wills/#", 1)
    silent = Paho(broker.mqtt_port, version, "silent", keepalive=1, will=_will("wills/silent", b"timed out"))
    stop_loop(silent.client)  # no more PINGREQs
    started = time.monotonic()
    assert watcher.next(timeout=15).payload == b"timed out"
    assert time.monotonic() - started >= 1.0
    watcher.disconnect()


def test_a_v5_client_is_told_when_the_broker_shuts_down(start_broker):
    broker = start_broker()
    client = Paho(broker.mqtt_port, V5)
    old = Paho(broker.mqtt_port, V311)
    broker.stop()
    assert client.disconnects.get(timeout=10).value == 0x8B  # Server shutting down
    assert old.disconnects.get(timeout=10) is not None  # 3.1.1: the connection closes
    stop_loop(client.client)
    stop_loop(old.client)
