"""A log's ingest rules, and the generic one: de-duplication by message id.

A log runs its rules, in order, on every message it takes in. A rule
defines any of these hooks (the others stay None, so the log calls only
what a rule has):

- ``check(log, message)``, before the message is stored: returns None to go
  on, or the sequence of the stored message that this one repeats (it is
  not stored again, and its publisher is answered as for a duplicate), or
  raises (``Refused``, or any error) to refuse it;
- ``stored(log, message, seq, timestamp)``, once it is appended (in the same
  ``Log.append`` call as the ``check`` of that message, so a rule may keep
  what its check found for it);
- ``unwritten(log, seqs)``: those messages did not reach the disk and were
  taken back out of the log (a retry must be able to store them again);
- ``restore(log)``: the log starts taking messages (at start-up, after a
  restart, and when it is configured again): rebuild state from the store.

Protocol rules (JetStream's ``Nats-Expected-*`` and ``Nats-Rollup``) live
with their protocol; this module has what any protocol can use.
"""

from __future__ import annotations

import collections


class Refused(Exception):
    """A rule refuses a message (expected, not a fault: the log does not log it)."""


class IngestRule:
    """The hooks a rule may define; see the module docstring."""

    check = None
    stored = None
    unwritten = None
    restore = None


class Deduplicate(IngestRule):
    """A message whose id was stored within the last ``window`` ns is a
    duplicate of that message (nats-server's duplicate window; MQTT/AMQP
    message ids and Kafka producer ids can use it too).

    ``message_id(item)``: the id of a Message or a StoredMessage, or a false
    value for none (the protocol says where it is: a header, a property).
    ``last_id`` is the id of the last message stored ("" when it had none),
    which nats-server's ``Nats-Expected-Last-Msg-Id`` compares against.
    Ids are kept in order of storing, so forgetting the old ones is a walk
    from the front.
    """

    def __init__(self, message_id, window: int):
        self.message_id = message_id
        self.window = window
        self.last_id = ""
        self._recent: collections.OrderedDict = collections.OrderedDict()  # id -> (seq, timestamp ns)
        self._checked = None  # the id of the message being taken in

    def check(self, log, message):
        msg_id = self._checked = self.message_id(message)
        if not msg_id:
            return None
        self._forget_old(log.now())
        seen = self._recent.get(msg_id)
        return seen[0] if seen is not None else None

    def stored(self, log, message, seq: int, timestamp: int) -> None:
        msg_id = self._checked
        if msg_id:
            self._remember(msg_id, seq, timestamp)
        else:
            self.last_id = ""

    def unwritten(self, log, seqs) -> None:
        for msg_id, (seq, _timestamp) in list(self._recent.items()):
            if seq in seqs:
                del self._recent[msg_id]

    def restore(self, log) -> None:
        """The ids stored within the window, read back from the store."""
        store = log.store
        for stored in store.messages_from(store.seq_for_time(log.now() - self.window)):
            msg_id = self.message_id(stored)
            if msg_id:
                self._remember(msg_id, stored.seq, stored.timestamp)

    def _remember(self, msg_id: str, seq: int, timestamp: int) -> None:
        self._recent[msg_id] = (seq, timestamp)
        self._recent.move_to_end(msg_id)
        self.last_id = msg_id

    def _forget_old(self, now: int) -> None:
        oldest = now - self.window
        recent = self._recent
        while recent:
            msg_id, (_seq, timestamp) = next(iter(recent.items()))
            if timestamp >= oldest:
                break
            del recent[msg_id]
