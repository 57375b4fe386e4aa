"""A durable consumer's files: its configuration once, its state as a journal.

One directory per consumer (``ConsumerFiles``)::

    config.json          {"config": ..., "created": ns}: written when the
                         consumer is created or updated (temp file, fsync,
                         rename, fsync of the directory)
    snapshot.json        {"generation": g, "state": ...}: the whole state
                         (consumer.py's ``state()``), written the same way
    journal.<g>.log      what changed since that snapshot: records of
                         u32 length, u32 CRC-32 of the body, body (the JSON
                         of consumer.py's ``delta()``), appended per save

A save appends one record whose size grows with what changed since the last
save (acks, deliveries, floor moves), not with the pending list. When the
journal outgrows the snapshot (and ``COMPACT_MIN``), the state is written as
snapshot g+1 and journal g is deleted: a snapshot of S bytes is written at
most once per S bytes of journal, so a save costs O(its changes) amortised.

Loading reads the snapshot and replays its generation's journal; a record
that is torn, fails its CRC or holds what no consumer state can (2**70 as a
sequence) ends the journal there (it is truncated):
a power loss costs at most what was not yet synced (acks are then redelivered,
at-least-once), never the consumer, whose configuration was synced when it
was written. Journals of other generations (a crash in the middle of a
compaction) are deleted.

The disk work goes through the storage engine (``storage``), off the
reactor thread and by its fsync policy: the configuration and snapshots are
whole files the engine replaces atomically (``replace_file``: written here,
fsynced and renamed by its worker; the journal a snapshot replaces is
deleted only once the snapshot is in place), each journal append is handed
to ``sync_paths`` (under "always" an fsync on the worker, under "interval"
at its next periodic sync, under "never" none), and a deleted consumer's
directory is renamed aside and deleted by the worker
(``discard_directory``). So no save, create or delete waits for the disk on
the reactor thread. A crash before the worker's job keeps the old file:
the consumer as it was before its last create or compaction (then at most
its recent acks are redelivered, at-least-once).
"""

from __future__ import annotations

import json
import os
import struct
import zlib

from flowmq.core.store.files import log, write_all
from flowmq.core.store.records import MAX_SEQ

CONFIG_FILE = "config.json"
SNAPSHOT_FILE = "snapshot.json"
_JOURNAL = "journal.%d.log"
#: A record's head: the body's length and its CRC-32.
_HEAD = struct.Struct("<II")
#: The journal is compacted into a snapshot past max(snapshot size, COMPACT_MIN) bytes.
COMPACT_MIN = 64 * 1024


def _empty_state() -> dict:
    """The state of a consumer that delivered nothing yet (it reads from the start)."""
    return {"next_seq": 1, "delivered": [0, 0], "ack_floor": [0, 0], "pending": [], "last_per_topic": []}


def _dumps(document) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


class ConsumerFiles:
    """The files of one durable consumer in ``directory``, written through
    ``storage`` (the StorageEngine: its policy, worker and directory removal)."""

    def __init__(self, directory: str, storage):
        self.directory = directory
        self.storage = storage
        self.generation = 1
        self.snapshot_bytes = 0
        self.journal_bytes = 0
        self._failed = False  # a save failed: its changes are in no record, so the next one snapshots
        #: Bytes written to disk so far (configuration, snapshots, journal).
        self.bytes_written = 0

    @property
    def journal_path(self) -> str:
        return os.path.join(self.directory, _JOURNAL % self.generation)

    # -- writing ---------------------------------------------------------------------

    def create(self, document: dict, state: dict) -> None:
        """A new consumer: its configuration document and first snapshot
        (whatever an earlier consumer of that name left there goes first:
        its journal must not follow the new snapshot)."""
        parent = os.path.dirname(self.directory)
        self.storage.discard_directory(self.directory)
        os.makedirs(self.directory)
        self.write_config(document)
        self._snapshot(state, self.generation)
        # The new entries: ours, and "consumers" itself if it is new.
        self.storage.sync_paths((parent, os.path.dirname(parent)))

    def write_config(self, document: dict) -> None:
        data = _dumps(document)
        self.storage.replace_file(os.path.join(self.directory, CONFIG_FILE), data)
        self.bytes_written += len(data)

    def save(self, delta: dict, state) -> None:
        """Append ``delta``; or, once the journal outgrows the snapshot, write
        ``state()`` as the next snapshot instead."""
        body = _dumps(delta)
        record = _HEAD.pack(len(body), zlib.crc32(body)) + body
        compact = self._failed or self.journal_bytes + len(record) > max(self.snapshot_bytes, COMPACT_MIN)
        # Until written: the changes of a failed save are in no record (and a
        # torn one may end the journal), so the next save writes a snapshot.
        self._failed = True
        if compact:
            self._compact(state())
        else:
            self._append(record)
        self._failed = False

    def _append(self, record: bytes) -> None:
        path = self.journal_path
        new = not self.journal_bytes and not os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            write_all(fd, record)
        finally:
            os.close(fd)
        self.journal_bytes += len(record)
        self.bytes_written += len(record)
        self.storage.sync_paths((path, self.directory) if new else (path,))

    def _snapshot(self, state: dict, generation: int, replaces=()) -> None:
        data = _dumps({"generation": generation, "state": state})
        self.storage.replace_file(os.path.join(self.directory, SNAPSHOT_FILE), data, replaces)
        self.bytes_written += len(data)
        self.snapshot_bytes = len(data)

    def _compact(self, state: dict) -> None:
        """Snapshot g+1, then journal g goes (a crash between leaves both:
        loading keeps the snapshot and deletes the old journal; a crash
        before the snapshot is in place leaves snapshot g and journal g)."""
        old = self.journal_path
        self._snapshot(state, self.generation + 1, (old,))
        self.generation += 1
        self.journal_bytes = 0

    def remove(self) -> None:
        """The consumer was deleted: its files go (renamed aside now, deleted by the worker)."""
        self.storage.discard_directory(self.directory)

    # -- reading ---------------------------------------------------------------------

    def read_config(self) -> dict:
        """The configuration document; OSError or ValueError if it cannot be read."""
        with open(os.path.join(self.directory, CONFIG_FILE), "rb") as handle:
            document = json.loads(handle.read().decode("utf-8"))
        if not isinstance(document, dict):
            raise ValueError("config.json is not an object")
        return document

    def load(self, name: str) -> dict:
        """The saved state: the snapshot and its journal's good records (a
        torn or corrupt tail is cut off). An unreadable snapshot (a damaged
        disk) gives the empty state: everything is delivered again rather
        than the consumer lost."""
        try:
            with open(os.path.join(self.directory, SNAPSHOT_FILE), "rb") as handle:
                snapshot = json.loads(handle.read().decode("utf-8"))
            generation, state = snapshot["generation"], snapshot["state"]
            if not isinstance(generation, int) or generation < 1:
                raise ValueError("not a snapshot")
            check_state(state)
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.error("consumer {name}: its state snapshot is unreadable ({error}); it starts again from the "
                      "first message", name=name, error=error)
            generation, state = 0, _empty_state()
        self.generation = generation
        self.snapshot_bytes = os.path.getsize(os.path.join(self.directory, SNAPSHOT_FILE)) if generation else 0
        for entry in os.listdir(self.directory):
            if entry.startswith("journal.") and entry != _JOURNAL % generation:
                _unlink(os.path.join(self.directory, entry))
        if not generation:  # start a good snapshot, so that later journals have one to follow
            self._compact(state)
            return state
        return self._replay(name, state)

    def _replay(self, name: str, state: dict) -> dict:
        path = self.journal_path
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return state
        pending = {entry[0]: entry for entry in state["pending"]}
        first_left = list(state.get("last_per_topic", ()))
        offset = 0
        while offset < len(data):
            delta = _record(data, offset)
            if delta is None or not _apply(state, pending, first_left, delta):
                os.truncate(path, offset)
                log.warn("consumer {name}: state journal {file} cut at offset {offset}: dropped {dropped} bytes "
                         "(torn or corrupt tail)", name=name, file=os.path.basename(path), offset=offset,
                         dropped=len(data) - offset)
                break
            offset += _HEAD.size + _HEAD.unpack_from(data, offset)[0]
        self.journal_bytes = offset
        state["pending"] = list(pending.values())  # a dict keeps the consumer's order: of first delivery
        return state


def _record(data: bytes, offset: int):
    """The delta at ``offset``, or None if the record is torn or corrupt."""
    if offset + _HEAD.size > len(data):
        return None
    length, crc = _HEAD.unpack_from(data, offset)
    body = data[offset + _HEAD.size:offset + _HEAD.size + length]
    if len(body) != length or zlib.crc32(body) != crc:
        return None
    try:
        delta = json.loads(body.decode("utf-8"))
    except ValueError:
        return None
    return delta if isinstance(delta, dict) else None


def _apply(state: dict, pending: dict, first_left: list, delta: dict) -> bool:
    """Apply one delta to the state being rebuilt; False (nothing applied)
    if it does not make sense."""
    try:
        scalars = [delta["next_seq"]] + _pair(delta["delivered"]) + _pair(delta["ack_floor"])
        entries, gone, left = delta["set"], delta["gone"], delta["last_per_topic_left"]
        if not (isinstance(entries, list) and isinstance(gone, list) and all(map(_is_entry, entries))
                and all(map(_is_seq, scalars + gone)) and _is_seq(left) and left <= len(first_left)):
            return False
    except (KeyError, TypeError, ValueError):
        return False
    state["next_seq"], state["delivered"], state["ack_floor"] = scalars[0], scalars[1:3], scalars[3:5]
    for entry in entries:
        pending[entry[0]] = entry
    for seq in gone:
        pending.pop(seq, None)
    state["last_per_topic"] = first_left[len(first_left) - left:]
    return True


def check_state(state) -> None:
    """ValueError unless ``state`` is a consumer state (consumer.py's
    ``state()``) whose numbers are sequences a stream can have (a document
    of an earlier version may hold 2**70)."""
    if not isinstance(state, dict):
        raise ValueError("the state is not an object")
    try:
        numbers = [state["next_seq"]] + _pair(state["delivered"]) + _pair(state["ack_floor"])
        first_left, pending = state.get("last_per_topic", []), state["pending"]
        shaped = isinstance(first_left, list) and isinstance(pending, list) and all(map(_is_entry, pending))
    except (KeyError, TypeError, ValueError):
        shaped = False
    if not shaped or not all(map(_is_seq, numbers + first_left)):
        raise ValueError("the state holds a number that is not a sequence a stream can have")


def _pair(value) -> list:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("not a pair of sequences")
    return value


def _is_seq(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQ + 1


def _is_entry(entry) -> bool:
    """A pending entry: [stream seq, consumer seq, deliveries]."""
    return isinstance(entry, list) and len(entry) == 3 and all(map(_is_seq, entry))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
