"""MQTT logins and permissions through the shared portal and rules, and MQTT
over TLS on its own port (client certificates as for NATS)."""

from __future__ import annotations

import ssl

import pytest

from flowmq.mqtt.codec import packets as P
from pahoclient import V5, V311, VERSIONS, Paho, stop_loop
from raw_mqtt import MqttClient
from tlscerts import make_pki

ALICE = {
    "name": "alice",
    "password": "wonderland",
    "publish": ["orders/#"],
    "subscribe": {"allow": ["orders/#", "news/#"], "deny": ["orders/secret"]},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _connack_reason(port, version, **kwargs):
    client = Paho(port, version, connect=False, **kwargs)
    client.client.connect("127.0.0.1", port)
    client.client.loop_start()
    _flags, reason, _props = client.connack.get(timeout=10)
    stop_loop(client.client)
    return reason.value


@pytest.mark.parametrize("version", VERSIONS, ids=["v311", "v5"])
def test_user_name_and_password(start_broker, version):
    broker = start_broker(**{"auth.users": [ALICE]})
    client = Paho(broker.mqtt_port, version, username="alice", password="wonderland")
    assert client.reason.value == 0
    client.disconnect()
    # Bad User Name or Password: 0x86, which paho also reports for 3.1.1's return code 4.
    assert _connack_reason(broker.mqtt_port, version, username="alice", password="wrong") == 0x86


@pytest.mark.parametrize("version", VERSIONS, ids=["v311", "v5"])
def test_a_token_as_the_password_with_an_empty_user_name(start_broker, version):
    broker = start_broker(**{"auth.token": "s3cret"})
    client = Paho(broker.mqtt_port, version, username="", password="s3cret")
    assert client.reason.value == 0
    client.disconnect()


def test_a_denied_subscription_gets_its_failure_code_and_the_connection_stays(start_broker):
    broker = start_broker(**{"auth.users": [ALICE]})
    for version, failure in ((V311, 0x80), (V5, 0x87)):
        client = Paho(broker.mqtt_port, version, username="alice", password="wonderland")
        reasons = client.subscribe([("orders/new", 1), ("elsewhere", 1)])
        assert [reason.value for reason in reasons] == [1, failure]
        client.publish("orders/new", b"still connected", 1)
        assert client.next().payload == b"still connected"
        client.disconnect()


def test_a_denied_publish_is_dropped_in_v311_and_refused_with_0x87_in_v5(start_broker):
    broker = start_broker(**{"auth.users": [ALICE]})
    watcher = Paho(broker.mqtt_port, V5, username="alice", password="wonderland")
    watcher.subscribe("news/#", 1)
    old = Paho(broker.mqtt_port, V311, username="alice", password="wonderland")
    old.publish("news/flash", b"not allowed", 1)  # PUBACK comes, the message is dropped
    new = Paho(broker.mqtt_port, V5, username="alice", password="wonderland")
    acks = []
    new.client.on_publish = lambda client, userdata, mid, reason, props: acks.append(reason.value)
    info = new.client.publish("news/flash", b"not allowed either", 1)
    info.wait_for_publish(10)
    assert acks == [0x87]
    assert watcher.nothing_more()
    for client in (watcher, old, new):
        client.disconnect()


def test_mqtt_over_tls_on_its_own_port_with_client_certificates(start_broker, pki):
    broker = start_broker(**{
        "tls.cert": pki.server_cert, "tls.key": pki.server_key, "tls.ca": pki.ca, "tls.verify": True,
        "auth.users": [{key: value for key, value in ALICE.items() if key != "password"}],
        "auth.certificates": [{"cn": "alice", "user": "alice"}],
        "mqtt.tls_port": 0,
        # paho leaves a refused TLS connection open: the closing broker waits this long for it, not 10 s.
        "mqtt.write_deadline": 1.0,
    })
    tls_port = broker.service.listeners["MQTT 2"].port.getHost().port

    def connect(cert):
        client = Paho(tls_port, V311, connect=False)
        context = ssl.create_default_context(cafile=pki.ca)
        if cert is not None:
            context.load_cert_chain(*cert)
        client.client.tls_set_context(context)
        client.client.connect("localhost", tls_port)
        client.client.loop_start()
        return client

    alice = connect(pki.client_cert("alice"))
    alice.flags, alice.reason, _ = alice.connack.get(timeout=10)
    assert alice.reason.value == 0
    assert [reason.value for reason in alice.subscribe([("orders/x", 0), ("secret", 0)])] == [0, 0x80]
    alice.publish("orders/x", b"over tls", 1)
    assert alice.next().payload == b"over tls"
    alice.disconnect()
    mallory = connect(pki.client_cert("mallory"))  # a valid certificate mapped to nobody
    _flags, reason, _ = mallory.connack.get(timeout=10)
    assert reason.value == 0x86  # 3.1.1 return code 4, as paho reports it
    mallory.drop()
    # The plain port stays plain text.
    plain = Paho(broker.mqtt_port, V311, connect=False)
    plain.client.connect("127.0.0.1", broker.mqtt_port)
    plain.client.loop_start()
    _flags, reason, _ = plain.connack.get(timeout=10)
    assert reason.value == 0x86  # no credentials: refused, but spoken to in MQTT
    plain.drop()


def test_subscriptions_over_the_limit_are_refused_in_the_suback(start_broker):
    broker = start_broker(**{"mqtt.max_subscriptions": 2})
    for version, refused in ((V311, 0x80), (V5, 0x97)):
        client = Paho(broker.mqtt_port, version)
        reasons = client.subscribe([("a", 0), ("b", 0), ("c", 0), ("a", 1)])
        assert [reason.value for reason in reasons] == [0, 0, refused, 1]  # replacing one is not one more
        client.disconnect()


def test_mqtt5_refusals_say_why_in_a_reason_string_unless_the_client_asked_for_none(start_broker):
    """5.0 §3.4.2.2.2: a PUBACK that refuses carries a Reason String; with
    Request Problem Information 0 it carries none (MQTT-3.1.2-29), but a
    CONNACK still may (the login refusal)."""
    broker = start_broker(**{"auth.users": [ALICE]})
    for asked, expected in ((1, {"reason_string": "not authorized to publish to elsewhere"}), (0, {})):
        client = MqttClient(broker.mqtt_port, P.MQTT_5)
        client.connect("r%d" % asked, username="alice", password=b"wonderland",
                       properties={"request_problem_information": asked})
        client.send(P.Publish("elsewhere", b"x", 1, packet_id=9))
        ack = client.read_packet()
        assert (ack.packet_id, ack.reason_code, dict(ack.properties)) == (9, 0x87, expected)
        client.close()
    refused = MqttClient(broker.mqtt_port, P.MQTT_5)
    refused.send(P.Connect(P.MQTT_5, "r", username="alice", password=b"wrong",
                           properties={"request_problem_information": 0}))
    connack = refused.read_packet()
    assert (connack.reason_code, dict(connack.properties)) == (0x86, {"reason_string": "login refused"})
    refused.close()
