"""FlowMQ's embedded storage engine: message stores for streams.

A *stream* is an append-only sequence of messages numbered 1, 2, 3 ...
(sequences are never reused), each with a unified topic, optional headers,
a payload and a timestamp. A ``MessageStore`` keeps one stream and answers
what JetStream (and later Kafka topics, MQTT sessions, AMQP durable queues)
ask of it: get by sequence, the next message matching a topic filter, the
first message at or after a time, pending counts, per-topic counts; it
enforces the stream's ``Limits`` (count, bytes, age, per subject, message
size; discarding old or refusing new) and removes messages by delete and
purge.

- ``MemoryStore`` (memory.py) keeps everything in memory.
- ``FileStore`` (filestore.py, segment.py) is an append-only, segmented
  log per stream with an in-memory index (by sequence and by time), a CRC
  per record (records.py), deletions persisted as markers, and recovery
  that truncates a torn or corrupt tail at start-up instead of refusing to
  start.
- ``StorageEngine`` (engine.py) owns the data directory: it opens streams
  namespaced by kind (the protocol that owns them), batches flushes
  (``flush_all``) and applies the fsync policy, and keeps small JSON
  documents (stream config, consumer state) beside each stream. fsync,
  compaction and directory removals run on its ``DiskWorker`` (worker.py),
  off the reactor thread.
- The in-memory indexes by topic and by filter are in index.py.

The interface's data types are in datatypes.py. Both stores share their
bookkeeping and limit rules (base.py), so they behave alike; the tests run
one suite against both.
"""

from flowmq.core.store.base import MessageStore
from flowmq.core.store.datatypes import (
    LAST_SEQ,
    MAX_BYTES,
    MAX_MSG_SIZE,
    MAX_MSGS,
    MAX_MSGS_PER_SUBJECT,
    QUOTA_EXCEEDED,
    LimitExceeded,
    Limits,
    Quota,
    StoredMessage,
    StreamState,
    TooManyStreams,
)
from flowmq.core.store.engine import StorageEngine
from flowmq.core.store.filestore import FileStore
from flowmq.core.store.memory import MemoryStore
from flowmq.core.store.names import safe_name, unsafe_name
from flowmq.core.store.records import MAX_SEQ

__all__ = [
    "LAST_SEQ",
    "MAX_BYTES",
    "MAX_MSG_SIZE",
    "MAX_MSGS",
    "MAX_MSGS_PER_SUBJECT",
    "MAX_SEQ",
    "FileStore",
    "Limits",
    "LimitExceeded",
    "MemoryStore",
    "MessageStore",
    "QUOTA_EXCEEDED",
    "Quota",
    "StorageEngine",
    "StoredMessage",
    "StreamState",
    "TooManyStreams",
    "safe_name",
    "unsafe_name",
]
