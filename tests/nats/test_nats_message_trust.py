"""What a NATS publisher may say about a message, and what a request learns.

- The user id is the one property a NATS publisher cannot simply set:
  ``FlowMQ-User-Id`` must be the user it logged in as (RabbitMQ's rule for
  AMQP's user-id), else the message goes on without it. Observed by an
  in-process delivery target (what another protocol's connection reads)
  and by a NATS subscriber.
- A subscriber whose delivery failed (a bug, isolated by the broker) was
  still a responder: the requester gets no false "no responders" 503.
"""

from __future__ import annotations

from zope.interface import implementer

from flowmq.core.interfaces import IDeliveryTarget
from flowmq.core.router import Subscription
from tests.conftest import RawClient


@implementer(IDeliveryTarget)
class Recorder:
    """An in-process delivery target (as another protocol's connection is)."""

    echo = True
    permissions = None

    def __init__(self):
        self.got = []

    def deliver(self, message, subscriptions):
        self.got.append(message)


@implementer(IDeliveryTarget)
class Broken(Recorder):
    """A delivery target with a bug: every delivery raises."""

    def deliver(self, message, subscriptions):
        raise RuntimeError("a bug in a consumer")


def _login(broker, user: bytes, password: bytes) -> RawClient:
    client = RawClient(broker.port, timeout=20)
    client.handshake(b'{"verbose":false,"pedantic":false,"headers":true,"no_responders":true,'
                     b'"user":"%s","pass":"%s"}' % (user, password))
    return client


def _hpub(client, subject: bytes, block: bytes, payload: bytes = b"m") -> None:
    client.send(b"HPUB %s %d %d\r\n%s%s\r\n" % (subject, len(block), len(block) + len(payload), block, payload))


def test_a_nats_publisher_claims_only_its_own_user_id(start_broker):
    broker = start_broker(**{"auth.users": [{"name": "alice", "password": "a"}]})
    recorder = Recorder()
    broker.call(broker.service.broker.subscribe, Subscription(recorder, "t/x", None))
    subscriber = _login(broker, b"alice", b"a")
    subscriber.subscribe(b"t.x", b"1")
    publisher = _login(broker, b"alice", b"a")
    forged = b"NATS/1.0\r\nFlowMQ-User-Id: root\r\nFlowMQ-App-Id: billing\r\nflowmq-user-id: root\r\n\r\n"
    _hpub(publisher, b"t.x", forged)
    own = b"NATS/1.0\r\nFlowMQ-User-Id: alice\r\n\r\n"
    _hpub(publisher, b"t.x", own)
    rendered = b"NATS/1.0\r\nFlowMQ-User-Id: root\r\nFlowMQ-Types: 0p\r\n\r\n"  # the property line of a rendered block
    _hpub(publisher, b"t.x", rendered)
    publisher.send(b"PING\r\n")
    assert publisher.read_line() == b"PONG"

    blocks = []
    for _ in range(3):
        line = subscriber.read_line().split()
        assert line[0] == b"HMSG" or line[0] == b"MSG", line
        header_len = int(line[3]) if line[0] == b"HMSG" else 0
        blocks.append(subscriber.read_exact(int(line[-1]) + 2)[:header_len])
    assert blocks[0] == b"NATS/1.0\r\nFlowMQ-App-Id: billing\r\n\r\n"  # the forged lines are gone
    assert blocks[1] == own
    assert b"root" not in blocks[2]

    got = broker.call(lambda: list(recorder.got))
    assert [m.properties.user_id if m.properties else None for m in got] == [None, "alice", None]
    assert got[0].properties.app_id == "billing"  # the others are the publisher's to set, as in AMQP
    assert got[0].headers == (("FlowMQ-App-Id", "billing"),)
    for client in (subscriber, publisher):
        client.close()


def test_without_a_login_no_user_id_is_claimed(broker, raw_client):
    recorder = Recorder()
    broker.call(broker.service.broker.subscribe, Subscription(recorder, "t/x", None))
    client = raw_client()
    client.handshake()
    _hpub(client, b"t.x", b"NATS/1.0\r\nFlowMQ-User-Id: alice\r\nX: y\r\n\r\n")
    client.send(b"PING\r\n")
    assert client.read_line() == b"PONG"
    got = broker.call(lambda: list(recorder.got))
    assert len(got) == 1 and got[0].properties is None and got[0].headers == (("X", "y"),)


def test_a_responder_whose_delivery_failed_is_no_missing_responder(broker, raw_client):
    broken = Broken()
    broker.call(broker.service.broker.subscribe, Subscription(broken, "svc/x", None))
    client = raw_client()
    client.handshake()
    client.subscribe(b"_INBOX.r", b"1")
    client.send(b"PUB svc.x _INBOX.r 2\r\nhi\r\nPING\r\n")
    assert client.read_line() == b"PONG"  # and no 503 status before it
