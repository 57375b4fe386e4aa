"""The delivery contract: what the broker calls on the things it delivers to.

Declared with zope.interface, as Twisted declares its own contracts: every
implementation says so with ``@implementer`` and tests/core/test_delivery.py
checks each one with ``zope.interface.verify.verifyObject``.

- ``IDeliveryTarget``: anything a ``Subscription`` names as its consumer (a
  client connection, a stream, an internal listener). The broker reads
  ``echo`` and ``permissions`` and calls ``deliver(message, subscriptions)``
  once per message, with every subscription of that target that matches
  (``deliver_run`` once for a run of messages, ``Broker.publish_run``).
- ``IDestination``: a delivery target that keeps what it takes (a stream, a
  log): it holds the publisher's receipt until the message is stored.
- ``ISubscription``: one target's interest in a topic filter, with the
  per-subscription options the broker applies (no-local, ``$`` topics).

``InternalTarget`` is the base of the targets inside the broker.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface, implementer


class IDeliveryTarget(Interface):
    """What the broker delivers messages to (hashed by identity: the router
    groups the subscriptions of each target)."""

    echo = Attribute(
        "Connection-wide: False when the target does not want the messages it "
        "published itself (NATS CONNECT's echo). A target that never publishes "
        "says True.")

    permissions = Attribute(
        "None (nothing checked), or the logged-in user's "
        "flowmq.auth.permissions.Permissions: the broker passes the target over "
        "for a topic that ``may_receive`` refuses and records the reply topics "
        "it may answer (``note_reply``).")

    def deliver(message, subscriptions):
        """Take one message.

        ``subscriptions`` is a non-empty tuple of every subscription of this
        target that the message matches (a queue group's pick: a 1-tuple),
        in no particular order; the target gets the message once, however
        many of its subscriptions match (a protocol that delivers per
        subscription, as NATS does, loops over the tuple). An exception
        raised here is logged by the broker and costs only this delivery.
        """

    def deliver_run(run, subscriptions):
        """Take a run of two or more messages, in order: what one publisher
        published in a row to one topic, alike but for their payloads (a
        ``flowmq.core.message.MessageRun``, ``Broker.publish_run``). The
        same as ``deliver`` for each in turn, with ``subscriptions``
        matched once for the run; an exception costs this consumer the run.
        ``InternalTarget`` does it with ``deliver``, a protocol connection
        faster (NATS: from the payloads, with one queueing of all frames).
        """


class IDestination(IDeliveryTarget):
    """A delivery target that keeps what it takes (a stream, a log).

    When ``message.receipt`` is not None, the destination that takes the
    message calls ``done = message.receipt.hold()`` and later ``done(None)``
    once the message is stored under the fsync policy, or ``done(error)``
    (see flowmq.core.receipts). The second argument of ``deliver`` is
    usually ignored.
    """


class ISubscription(Interface):
    """One delivery target's interest in a topic filter."""

    consumer = Attribute("The IDeliveryTarget that gets the messages.")
    filter = Attribute("The canonical topic filter (flowmq.core.topics).")
    group = Attribute("The queue group's name, or None for a subscription that stands alone.")
    no_local = Attribute(
        "True: messages published by the subscription's own consumer are not "
        "delivered through it (MQTT 5 No Local), whatever ``echo`` says.")
    limited = Attribute(
        "True: the subscription ends after a number of messages (NATS UNSUB "
        "with a maximum); its queue group then hands out runs of messages one "
        "at a time (Broker.publish_run).")
    wildcard_dollar = Attribute(
        "False: a filter whose first level is a wildcard does not match a "
        "topic whose first level begins with '$' (MQTT-4.7.2: '#' does not "
        "receive $SYS or $JS/API). True, NATS's rule, matches them.")


@implementer(IDeliveryTarget)
class InternalTarget:
    """Base of the delivery targets inside the broker (the JetStream API and
    its listeners, streams): they take every message, their own included,
    under nobody's permissions. Subclasses define ``deliver``."""

    echo = True
    permissions = None

    def deliver_run(self, run, subscriptions):
        for message in run:
            self.deliver(message, subscriptions)
