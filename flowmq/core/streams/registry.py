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
The broker's WriteBatcher runs one flush at a time (the next begins once
the last one's ``after_sync`` has run), so one cut is under way at most.
A log whose answering raises is logged; the other logs are still answered.
"""

from __future__ import annotations

from flowmq.logs import logger

log = logger("flowmq.streams")


class LogRegistry:
    """The open logs of one broker, and the ones waiting for a store write."""

    def __init__(self, broker):
        self._broker = broker
        self._logs: dict = {}  # (kind, name) -> Log
        self._waiting: dict = {}  # Log -> None, in the order they started waiting
        self._flushing: dict = {}  # the flush under way: {Log: messages it covers}
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

    def wait_for_write(self, log) -> None:
        """``log`` has messages to answer once the store is written."""
        waiting = self._waiting
        if log not in waiting:  # else a sync is due already: none began since it was entered
            waiting[log] = None
            self._broker.batcher.need_sync()

    def _cut(self) -> None:
        """The broker's before_sync: a flush begins, and makes durable what
        the waiting logs hold now."""
        waiting, self._waiting = self._waiting, {}
        self._flushing = {log: log.unwritten() for log in waiting}

    def _written(self, failed) -> None:
        """The broker's after_sync: the flush under way is durable
        (``failed`` holds the stores whose write failed)."""
        flushed, self._flushing = self._flushing, {}
        for written_log, count in flushed.items():
            try:
                written_log.written(written_log.store in failed, count)
            except Exception:  # the other logs of this flush are still answered
                log.failure("log {kind}/{name}: answering its written messages failed",
                            kind=written_log.kind, name=written_log.name)
