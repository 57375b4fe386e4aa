"""MQTT retained messages: the last retained message of each topic, kept on
a core log and handed to each new matching subscription.

A PUBLISH with RETAIN set replaces the topic's retained message; one with
an empty payload clears it (MQTT-3.3.1-5..7, 5.0 §3.3.1.3). The messages
live in the core log ``mqtt/retained`` (one store for all topics, under the
broker's fsync policy: a QoS 1 or 2 publisher's PUBACK waits for its write,
through the message's receipt) and, for the subscriptions, in memory by
topic. The log keeps the last message of each topic (``LastPerTopic``), so
a restart reads back exactly the retained set.

A new subscription gets every retained message its filter matches
(``matching``): the filter is walked level by level over a tree of the
retained topics, so a subscription costs what it matches, not what is
retained. Wildcard filters whose first level is a wildcard do not match
topics that begin with ``$`` (MQTT-4.7.2-1).
"""

from __future__ import annotations

from flowmq.core.streams.log import Log
from flowmq.core.streams.rules import IngestRule
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL
from flowmq.logs import logger
from flowmq.mqtt.convert import MqttMessage

log = logger("flowmq.mqtt")

KIND = "mqtt"
NAME = "retained"


class LastPerTopic(IngestRule):
    """Keep only the newest message of each topic in the log."""

    def stored(self, log, message, seq: int, timestamp: int) -> None:
        log.store.purge(message.topic, up_to_seq=seq)


class _Level:
    """A node of the tree of retained topics."""

    __slots__ = ("children", "message")

    def __init__(self):
        self.children: dict = {}
        self.message = None


class RetainedMessages:
    """The retained messages of one broker; see the module docstring."""

    def __init__(self, broker):
        self.broker = broker
        self.log = None
        self._root = _Level()
        self._count = 0

    def __len__(self):
        return self._count

    def open(self) -> None:
        """Open the log and read the retained messages back. If the store
        cannot be opened (no file left under the open-file limit, a
        damaged directory), the broker runs on and says loudly that
        retained messages are kept in memory only."""
        try:
            store = self.broker.storage.open_stream(KIND, NAME)
        except Exception:
            log.failure("MQTT retained messages cannot be stored ({kind}/{name}): they are kept in memory "
                        "only until this is fixed and the broker restarted", kind=KIND, name=NAME)
            return
        self.log = Log(KIND, NAME, store, self.broker, rules=(LastPerTopic(),))
        self.log.attach()
        for stored in store.messages_from():
            self._put(MqttMessage(stored.topic, stored.payload, stored.headers, None, None, stored.properties,
                                  True))

    def close(self) -> None:
        if self.log is not None:
            self.log.detach()
            self.log = None

    def retain(self, message) -> None:
        """Keep ``message`` as its topic's retained message (an empty payload: clear it)."""
        if not message.payload:
            if self._remove(message.topic) and self.log is not None:
                self.log.store.purge(message.topic)
            return
        self._put(message)
        if self.log is not None:
            self.log.deliver(message, ())

    def matching(self, topic_filter: str) -> list:
        """The retained messages whose topics ``topic_filter`` matches."""
        found: list = []
        levels = topic_filter.split(SEPARATOR)
        _walk(self._root, levels, 0, found, True)
        return found

    def _put(self, message) -> None:
        node = self._root
        for level in message.topic.split(SEPARATOR):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Level()
            node = child
        if node.message is None:
            self._count += 1
        node.message = message

    def _remove(self, topic: str) -> bool:
        path = []
        node = self._root
        for level in topic.split(SEPARATOR):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.message is None:
            return False
        node.message = None
        self._count -= 1
        for parent, level in reversed(path):  # drop the branch that holds nothing now
            if node.message is not None or node.children:
                break
            del parent.children[level]
            node = parent
        return True


def _walk(node: _Level, levels: list, index: int, found: list, first: bool) -> None:
    if index == len(levels):
        if node.message is not None:
            found.append(node.message)
        return
    level = levels[index]
    if level == MULTI_LEVEL:
        # '#' matches the parent level too (MQTT-4.7.1-2: "sport/#" matches "sport").
        if node.message is not None and not first:
            found.append(node.message)
        _every(node, found, first)
    elif level == SINGLE_LEVEL:
        for name, child in node.children.items():
            if first and name.startswith("$"):
                continue
            _walk(child, levels, index + 1, found, False)
    else:
        child = node.children.get(level)
        if child is not None:
            _walk(child, levels, index + 1, found, False)


def _every(node: _Level, found: list, first: bool) -> None:
    """Every message below ``node``."""
    for name, child in node.children.items():
        if first and name.startswith("$"):
            continue
        if child.message is not None:
            found.append(child.message)
        _every(child, found, False)
