"""The delivery contract (flowmq.core.interfaces, Broker.deliver_to): who gets
a message, with which subscriptions, and what one failing consumer costs.

Most tests run an in-process Broker (no listener, no storage: publishing needs
neither) with real delivery targets that implement IDeliveryTarget and real
Permissions; the wire tests check the same rules through nats-py against a
running broker.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil

import nats
import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

import flowmq
from flowmq import config
from flowmq.auth.permissions import Permissions
from flowmq.core.broker import Broker
from flowmq.core.interfaces import IDeliveryTarget, IDestination, ISubscription
from flowmq.core.message import Message
from flowmq.core.router import Subscription

from tests.conftest import flushed, run


@implementer(IDeliveryTarget)
class Recorder:
    """A delivery target that records what it is handed."""

    def __init__(self, echo=True, permissions=None):
        self.echo = echo
        self.permissions = permissions
        self.got = []  # (payload, subscriptions)

    def deliver(self, message, subscriptions):
        self.got.append((message.payload, subscriptions))


@implementer(IDeliveryTarget)
class Broken(Recorder):
    """A delivery target with a bug: every delivery raises."""

    def deliver(self, message, subscriptions):
        raise RuntimeError("a bug in a consumer")


@pytest.fixture
def core():
    return Broker(config.load(None, {}), Clock())


def subscribe(broker, consumer, topic_filter, group=None, **options):
    subscription = Subscription(consumer, topic_filter, group, **options)
    broker.subscribe(subscription)
    return subscription


# --- the interfaces ---------------------------------------------------------------


def _flowmq_classes():
    for module_info in pkgutil.walk_packages(flowmq.__path__, "flowmq."):
        if module_info.name.endswith(".__main__"):
            continue  # a command, not a module to import
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                yield cls


def _is_broker_deliver(function) -> bool:
    """``deliver(self, message, subscriptions)``: the broker's, not a stream
    consumer's ``deliver(self, delivery)`` (flowmq.core.streams)."""
    return inspect.isfunction(function) and len(inspect.signature(function).parameters) == 3


def test_every_class_with_a_deliver_method_declares_the_interface():
    """A new delivery target must say what it implements (and is then verified below)."""
    targets = [cls for cls in _flowmq_classes() if _is_broker_deliver(vars(cls).get("deliver"))]
    assert {"NatsConnection", "JetStreamApi"} <= {cls.__name__ for cls in targets}, "the walk is broken"
    undeclared = [cls.__qualname__ for cls in targets if not IDeliveryTarget.implementedBy(cls)]
    assert undeclared == []


def test_every_implementation_verifies(start_broker):
    """verifyObject on the live objects of a broker that serves a NATS
    subscriber and a JetStream stream: connections, the JetStream API and
    listeners, streams, and every subscription of theirs."""
    broker = start_broker()

    async def scenario():
        nc = await nats.connect(broker.url)
        await nc.subscribe("orders.>")
        await nc.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
        await flushed(nc)
        try:
            return broker.call(live_objects)
        finally:
            await nc.close()

    def live_objects():
        router = broker.service.broker.router
        subscriptions = []
        for topic in ("$JS/API/INFO", "$JS/ACK/a", "$JS/FC/a", "orders/new"):
            subscriptions.extend(router.match(topic)[0])
        targets = [subscription.consumer for subscription in subscriptions]
        targets.extend(broker.service.listeners["NATS"].factory.connections)
        return targets, subscriptions

    targets, subscriptions = run(scenario())
    assert len(subscriptions) == 5  # API, ACK, FC, the stream's and the client's
    for target in targets:
        assert verifyObject(IDeliveryTarget, target)
    destinations = [target for target in targets if IDestination.providedBy(target)]
    assert destinations  # the stream
    for destination in destinations:
        assert verifyObject(IDestination, destination)
    for subscription in subscriptions:
        assert verifyObject(ISubscription, subscription)


# --- one delivery per consumer per message ------------------------------------------


def test_a_consumer_gets_one_delivery_with_all_its_matching_subscriptions(core):
    one, other = Recorder(), Recorder()
    first = subscribe(core, one, "a/+")
    others = subscribe(core, other, "a/b")
    second = subscribe(core, one, "a/#")
    subscribe(core, one, "a/c")  # does not match
    third = subscribe(core, one, "a/b")
    assert core.publish(Message("a/b", b"m1")) == 2
    assert core.publish(Message("a/b", b"m2")) == 2  # from the cached match
    assert [(payload, set(subscriptions)) for payload, subscriptions in one.got] == [
        (b"m1", {first, second, third}), (b"m2", {first, second, third})]
    assert all(len(subscriptions) == 3 for _, subscriptions in one.got)
    assert other.got == [(b"m1", (others,)), (b"m2", (others,))]


def test_a_queue_group_pick_is_a_one_tuple_beside_the_consumers_own_subscriptions(core):
    one = Recorder()
    alone = subscribe(core, one, "q/+")
    member = subscribe(core, one, "q/x", group="workers")
    assert core.publish(Message("q/x", b"m")) == 2
    assert one.got == [(b"m", (alone,)), (b"m", (member,))]


def test_a_queue_group_pick_allocates_no_tuple_per_message(core):
    """The member's 1-tuple is made once, on its subscription (before: a new
    ``(member,)`` for every message delivered to a queue group)."""
    one = Recorder()
    member = subscribe(core, one, "q/x", group="workers")
    core.publish(Message("q/x", b"1"))
    core.publish(Message("q/x", b"2"))
    assert one.got[0][1] is one.got[1][1] is member.alone == (member,)


def test_two_nats_subscriptions_that_match_get_one_msg_each(broker):
    """nats-server sends one MSG per matching subscription (sid) of a client."""

    async def scenario():
        nc = await nats.connect(broker.url)
        got = {"a.*": [], "a.b": [], ">": []}
        for subject in got:
            async def received(msg, subject=subject):
                got[subject].append(msg.data)

            await nc.subscribe(subject, cb=received)
        await nc.publish("a.b", b"one")
        await flushed(nc)
        for _ in range(100):
            if all(got.values()):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # nothing more comes
        await nc.close()
        return got

    assert run(scenario()) == {"a.*": [b"one"], "a.b": [b"one"], ">": [b"one"]}


# --- per-subscription options ----------------------------------------------------------


def test_no_local_subscriptions_skip_their_own_connections_messages(core):
    publisher, other = Recorder(), Recorder()
    quiet = subscribe(core, publisher, "t/+", no_local=True)
    loud = subscribe(core, publisher, "t/#")
    theirs = subscribe(core, other, "t/+", no_local=True)
    assert core.publish(Message("t/x", b"own", origin=publisher)) == 2
    assert publisher.got == [(b"own", (loud,))]  # not through the no-local subscription
    assert other.got == [(b"own", (theirs,))]  # no-local is about one's own messages only
    core.unsubscribe(loud)
    assert core.publish(Message("t/x", b"own again", origin=publisher)) == 1
    assert core.publish(Message("t/x", b"from another", origin=other)) == 1
    assert publisher.got[1:] == [(b"from another", (quiet,))]


def test_no_local_queue_members_pass_the_message_to_another_member(core):
    publisher, other = Recorder(), Recorder()
    subscribe(core, publisher, "w/+", group="g", no_local=True)
    theirs = subscribe(core, other, "w/+", group="g")
    for n in range(4):
        core.publish(Message("w/x", b"%d" % n, origin=publisher))
    assert publisher.got == []
    assert other.got == [(b"%d" % n, (theirs,)) for n in range(4)]


def test_dollar_topics_skip_leading_wildcards_of_subscriptions_that_keep_mqtts_rule(core):
    """MQTT-4.7.2: '#' and '+/...' do not match '$' topics; '$JS/#' does. NATS
    subscriptions (the default, wildcard_dollar=True) keep nats-server's rule."""
    mqtt, nats_like = Recorder(), Recorder()
    for topic_filter in ("#", "+/API/#", "+/+/+"):
        subscribe(core, mqtt, topic_filter, wildcard_dollar=False)
    dollar = subscribe(core, mqtt, "$JS/#", wildcard_dollar=False)
    everything = subscribe(core, nats_like, "#")
    assert core.publish(Message("$JS/API/INFO", b"api")) == 2
    assert mqtt.got == [(b"api", (dollar,))]
    assert nats_like.got == [(b"api", (everything,))]
    mqtt.got.clear()
    core.publish(Message("JS/API/INFO", b"plain"))
    assert len(mqtt.got[0][1]) == 3  # '#', '+/API/#', '+/+/+'; not '$JS/#'


def test_dollar_rule_in_a_queue_group(core):
    mqtt, nats_like = Recorder(), Recorder()
    subscribe(core, mqtt, "#", group="g", wildcard_dollar=False)
    member = subscribe(core, nats_like, "#", group="g")
    for n in range(4):
        core.publish(Message("$SYS/x", b"%d" % n))
    assert mqtt.got == [] and len(nats_like.got) == 4
    core.unsubscribe(member)
    assert core.publish(Message("$SYS/x", b"none")) == 0
    assert not core.router.has_interest("$SYS/x")


def test_nats_wildcards_receive_dollar_subjects_as_nats_server_does(broker):
    """nats-server delivers $JS.API.INFO, $SYS.x ... to '>' and '*.>' subscribers."""

    async def scenario():
        nc = await nats.connect(broker.url)
        got = []

        async def everything(msg):
            got.append(msg.subject)

        async def api(msg):
            got.append("*.API.> " + msg.subject)

        await nc.subscribe(">", cb=everything)
        await nc.subscribe("*.API.>", cb=api)
        for subject in ("$JS.API.INFO", "$foo.bar"):
            await nc.publish(subject, b"x")
        await flushed(nc)
        for _ in range(100):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.05)
        await nc.close()
        return got

    got = run(scenario())
    assert "$JS.API.INFO" in got and "$foo.bar" in got and "*.API.> $JS.API.INFO" in got


# --- isolation ---------------------------------------------------------------------------


def test_a_failing_consumer_costs_only_its_own_delivery(core):
    before, after = Recorder(), Recorder()
    first = subscribe(core, before, "f/x")
    subscribe(core, Broken(), "f/x")
    last = subscribe(core, after, "f/x")
    subscribe(core, Broken(), "f/x", group="g")
    member = subscribe(core, Recorder(), "f/+", group="h")
    publisher = Recorder()
    assert core.publish(Message("f/x", b"m", origin=publisher)) == 5  # attempted; no exception for the publisher
    assert before.got == [(b"m", (first,))] and after.got == [(b"m", (last,))]
    assert member.consumer.got == [(b"m", (member,))]


def test_a_failing_interest_watcher_leaves_no_subscription_behind(core):
    def watcher(subscription):
        raise RuntimeError("a bug in a watcher")

    core.interest_watchers.append(watcher)
    consumer = Recorder()
    with pytest.raises(RuntimeError):
        subscribe(core, consumer, "w/x")
    assert core.router.count == 0
    assert core.publish(Message("w/x", b"m")) == 0 and consumer.got == []


def test_a_queue_pick_that_lands_on_a_member_denied_the_topic_tries_the_next(core):
    """The member may subscribe to 'p/+' but not receive 'p/secret' (a
    subscribe-deny filter, nats-server's per-delivery check): every message
    goes to the member that may receive it, none is lost."""
    denied = Recorder(permissions=Permissions(subscribe_deny=["p/secret"]))
    allowed = Recorder(permissions=Permissions())
    subscribe(core, denied, "p/+", group="g")
    subscribe(core, allowed, "p/+", group="g")
    assert [core.publish(Message("p/secret", b"%d" % n)) for n in range(6)] == [1] * 6
    assert denied.got == [] and [payload for payload, _ in allowed.got] == [b"%d" % n for n in range(6)]
    core.publish(Message("p/open", b"shared"))
    core.publish(Message("p/open", b"shared"))
    assert len(denied.got) == 1  # round-robin as before where both may receive


def test_a_nats_subscribe_that_a_watcher_fails_answers_an_error_and_keeps_the_client(broker, raw_client):
    def failing(subscription):
        raise RuntimeError("a bug in a watcher")

    watchers = broker.service.broker.interest_watchers
    broker.call(watchers.append, failing)
    client = raw_client()
    client.handshake()
    client.send(b"SUB w.x 1\r\nPING\r\n")
    assert client.read_line() == b"-ERR 'Subscription Failed'"
    assert client.read_line() == b"PONG"
    broker.call(watchers.remove, failing)
    assert broker.call(lambda: broker.service.broker.router.count) == 3  # JetStream's own: $JS.API, ACK, FC
    client.subscribe(b"w.x", b"2")  # the sid of the failed SUB is free, the client served
    client.send(b"PUB w.x 2\r\nhi\r\n")
    assert client.read_line() == b"MSG w.x 2 2"
    assert client.read_exact(4) == b"hi\r\n"


def test_a_nats_queue_group_member_denied_the_subject_passes_it_on(start_broker):
    broker = start_broker(**{"auth.users": [
        {"name": "alice", "password": "a", "subscribe": {"deny": ["p/secret"]}},  # unified topic filters
        {"name": "bob", "password": "b"},
    ]})

    async def scenario():
        url = "nats://%s@127.0.0.1:%d"
        alice = await nats.connect(url % ("alice:a", broker.port))
        bob = await nats.connect(url % ("bob:b", broker.port))
        got = {"alice": [], "bob": []}

        async def to_alice(msg):
            got["alice"].append(msg.data)

        async def to_bob(msg):
            got["bob"].append(msg.data)

        await alice.subscribe("p.*", queue="g", cb=to_alice)
        await bob.subscribe("p.*", queue="g", cb=to_bob)
        await flushed(alice)
        for n in range(6):
            await bob.publish("p.secret", b"%d" % n)
        await flushed(bob)
        for _ in range(100):
            if len(got["bob"]) >= 6:
                break
            await asyncio.sleep(0.05)
        await flushed(alice)
        await alice.close()
        await bob.close()
        return got

    assert run(scenario()) == {"alice": [], "bob": [b"%d" % n for n in range(6)]}


def test_a_failing_consumer_keeps_the_nats_publisher_and_the_other_subscribers(broker):
    core_broker = broker.service.broker
    broken = Subscription(Broken(), "iso/x")
    broker.call(core_broker.subscribe, broken)

    async def scenario():
        publisher = await nats.connect(broker.url, allow_reconnect=False)  # dropped: stays closed
        subscriber = await nats.connect(broker.url)
        got = []

        async def received(msg):
            got.append(msg.data)

        await subscriber.subscribe("iso.x", cb=received)
        await flushed(subscriber)
        for n in range(3):
            await publisher.publish("iso.x", b"%d" % n)
        await flushed(publisher)  # the publisher's connection still answers
        for _ in range(100):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.05)
        connected = publisher.is_connected
        await publisher.close()
        await subscriber.close()
        return got, connected

    assert run(scenario()) == ([b"0", b"1", b"2"], True)
    broker.call(core_broker.unsubscribe, broken)
