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
written or failed.
"""

from __future__ import annotations


class LogRegistry:
    """The open logs of one broker, and the ones waiting for a store write."""

    def __init__(self, broker):
        self._broker = broker
        self._logs: dict = {}  # (kind, name) -> Log
        self._waiting: dict = {}  # Log -> None, in the order they started waiting
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

    def _written(self, failed) -> None:
        """The broker's after_sync: ``failed`` holds the stores whose write failed."""
        waiting, self._waiting = self._waiting, {}
        for log in waiting:
            log.written(log.store in failed)
