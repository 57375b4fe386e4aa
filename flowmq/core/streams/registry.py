"""The broker's logs, by (kind, name).

``kind`` is the protocol's namespace: "jetstream" for JetStream streams,
later "kafka" (topics), "amqp" (durable queues), "mqtt" (sessions). The same
name in two kinds is two logs, as the storage engine keeps them apart; each
protocol restores its own logs at start-up and adds them here when they
start taking messages. Every log is the core's Log, whoever made it, so a
protocol can read another's (a Kafka client reading a JetStream stream)
through ``get`` without importing that protocol.

The registry also relays the broker's store flushes to the logs that wait
for one (``wait_for_write``): their publishers are answered, and their
receipts completed, once the broker's ``after_sync`` says the store was
written or failed. The fsync runs off the reactor thread, so messages keep
arriving while one is under way: when a flush begins (``before_sync``) the
registry notes how many messages each log has waiting, and that flush's
``after_sync`` answers only those, oldest first; the rest wait for the next.
"""

from __future__ import annotations

from collections import deque


class LogRegistry:
    """The open logs of one broker, and the ones waiting for a store write."""

    def __init__(self, broker):
        self._broker = broker
        self._logs: dict = {}  # (kind, name) -> Log
        self._waiting: dict = {}  # Log -> None, in the order they started waiting
        self._flushing: deque = deque()  # per flush under way, oldest first: {Log: messages it covers}
        broker.before_sync.append(self._cut)
        broker.after_sync.append(self._written)

    def add(self, log) -> None:
        """Enter ``log``; ValueError if its kind already has a log of that name."""
        key = (log.kind, log.name)
        if key in self._logs:
            raise ValueError("a %s log named %r is open already" % key)
        self._logs[key] = log

    def remove(self, log) -> None:
        """Take ``log`` out (if it is the one entered). Its publishers waiting
        for the store's write are still answered."""
        if self._logs.get((log.kind, log.name)) is log:
            del self._logs[(log.kind, log.name)]

    def get(self, kind: str, name: str):
        """The open log ``name`` of ``kind``, or None."""
        return self._logs.get((kind, name))

    def names(self, kind: str) -> list:
        """The names of the open logs of ``kind``, sorted."""
        return sorted(name for log_kind, name in self._logs if log_kind == kind)

    def wait_for_write(self, log) -> None:
        """``log`` has messages to answer once the store is written."""
        self._waiting[log] = None
        self._broker.batcher.need_sync()

    def _cut(self) -> None:
        """The broker's before_sync: a flush begins, and makes durable what
        the waiting logs hold now."""
        waiting, self._waiting = self._waiting, {}
        self._flushing.append({log: log.unwritten() for log in waiting})

    def _written(self, failed) -> None:
        """The broker's after_sync: the oldest flush under way is durable
        (``failed`` holds the stores whose write failed)."""
        if self._flushing:
            for log, count in self._flushing.popleft().items():
                log.written(log.store in failed, count)
