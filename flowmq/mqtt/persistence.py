"""Persistent MQTT sessions on disk: their terms and subscriptions, and the
QoS 1 and 2 messages that wait for their clients, on two core logs.

- ``mqtt/sessions`` holds one record per persistent session (the last one
  of its key: ``LastPerTopic``), a JSON document of its client id, its
  expiry and its subscriptions; it is written when they change, and the
  session's key is purged when the session ends.
- ``mqtt/queued`` holds each QoS 1 or 2 message for a persistent session,
  stored under ``<session key>/<topic>`` from the moment it is queued (or
  sent) until the client acknowledged it (PUBACK, or PUBREC for QoS 2).
  The publisher's receipt is held for that write, so a PUBACK/PUBREC goes
  to the publisher only once every persistent session that gets the
  message has it on disk (under the broker's fsync policy).

Two store files whatever the number of sessions (100,000 sessions are not
100,000 open files). A session key is the hex of its client id's UTF-8, so
any client id makes a one-level topic. A message for several persistent
sessions is written once per session.

The packet ids of a session's exchanges live in memory while the broker
runs (a write per PUBLISH and acknowledgement would double the disk work
of QoS 1). A graceful stop writes them into each session's record (which
messages were in flight under which id, the PUBRELs awaiting PUBCOMP, the
client's QoS 2 ids awaiting PUBREL), and the start after it resumes them
and writes the record again without them. After a crash what is left of
a session goes again with DUP set and new packet ids.
"""

from __future__ import annotations

import json

from flowmq.core.message import Message, Properties
from flowmq.core.streams.log import Log
from flowmq.core.topics import SEPARATOR
from flowmq.logs import logger
from flowmq.mqtt.codec.packets import SubscriptionOptions
from flowmq.mqtt.retained import KIND, LastPerTopic

log = logger("flowmq.mqtt")

SESSIONS = "sessions"
QUEUED = "queued"
#: The record format of ``mqtt/sessions``.
VERSION = 1


def session_key(client_id: str) -> str:
    return client_id.encode("utf-8").hex()


class RestoredSession:
    """What the disk held of one session: its document and queued messages (in order)."""

    def __init__(self, document: dict):
        self.client_id = document["client_id"]
        self.expiry = document.get("expiry")
        self.subscriptions = [(entry[0], SubscriptionOptions(*entry[1:5]), entry[5])
                              for entry in document.get("subscriptions", ())]
        #: ``Session.delivery_state()`` as a graceful stop wrote it; None after a crash.
        self.delivery = document.get("delivery")
        self.queued: list = []  # (seq, Message, qos)


class SessionStore:
    """The two logs of persistent MQTT sessions; see the module docstring."""

    def __init__(self, broker):
        self.broker = broker
        self.sessions = None
        self.queued = None

    def open(self) -> dict:
        """Open both logs; what they hold, as ``{client id: RestoredSession}``."""
        storage = self.broker.storage
        self.sessions = Log(KIND, SESSIONS, storage.open_stream(KIND, SESSIONS), self.broker,
                            rules=(LastPerTopic(),))
        self.queued = Log(KIND, QUEUED, storage.open_stream(KIND, QUEUED), self.broker)
        self.sessions.attach()
        self.queued.attach()
        restored: dict = {}
        by_key: dict = {}
        for stored in self.sessions.store.messages_from():
            try:
                document = json.loads(stored.payload)
                session = RestoredSession(document)
            except (ValueError, KeyError, TypeError, IndexError) as error:
                log.error("MQTT session record {seq} cannot be read ({error}): left out", seq=stored.seq,
                          error=error)
                continue
            restored[session.client_id] = by_key[stored.topic] = session
        for stored in self.queued.store.messages_from():
            key, _, topic = stored.topic.partition(SEPARATOR)
            session = by_key.get(key)
            if session is None:  # its session ended, or its record was unreadable
                self.queued.store.delete(stored.seq)
                continue
            qos = stored.properties.qos if stored.properties is not None and stored.properties.qos else 1
            session.queued.append((stored.seq, Message(topic, stored.payload, stored.headers, None, None,
                                                       stored.properties), qos))
        return restored

    def close(self) -> None:
        for log_ in (self.sessions, self.queued):
            if log_ is not None:
                log_.detach()
        self.sessions = self.queued = None

    def save(self, session, delivery: bool = False) -> None:
        """Write the session's terms and subscriptions; with ``delivery``
        (at a graceful stop) also the packet ids of its QoS 1/2 exchanges."""
        document = {
            "version": VERSION,
            "client_id": session.client_id,
            "expiry": session.expiry,
            "subscriptions": [
                [s.topic_filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling, s.identifier]
                for s in session.subscriptions.values()],
        }
        if delivery:
            document["delivery"] = session.delivery_state()
        self.sessions.deliver(Message(session_key(session.client_id), json.dumps(document).encode()), ())

    def forget(self, session) -> None:
        """The session ended: its record and its queued messages go."""
        key = session_key(session.client_id)
        self.sessions.store.purge(key)
        self.queued.store.purge(key + SEPARATOR + "#")

    def keep(self, session, message, qos: int):
        """Store a message for the session (its publisher's receipt waits
        for the write); its sequence, to ``release`` once acknowledged, or
        None if the store refused it (the receipt has the error)."""
        copy = Message(session_key(session.client_id) + SEPARATOR + message.topic, message.payload,
                       message.headers, None, None, _with_qos(message.properties, qos))
        copy.receipt = message.receipt
        return self.queued.deliver(copy, ())

    def release(self, seq: int) -> None:
        self.queued.store.delete(seq)


def _with_qos(properties, qos: int):
    """``properties`` with ``qos`` (what the session delivers it at)."""
    if properties is not None and properties.qos == qos:
        return properties
    values = dict(properties.items()) if properties is not None else {}
    values["qos"] = qos
    return Properties(**values)

