"""The tombstone file of a FileStore: how removals survive a restart.

Segments are append-only, so removals are recorded apart from them, in
``tombstones.log`` beside the segments, as records of the same format
(records.py):

- FIRST(n): every sequence below n is gone. Written at a flush when the
  stream's first sequence moved (limits, expiry, purges from the front: one
  small record however many messages went);
- DELETED(seqs): these sequences are gone (delete, per-subject limits,
  purges by topic), for those not already covered by FIRST.

At start-up the file is read (a torn tail is cut off) and applied to
the segments' entries. When it grows past a few times what it needs to say,
the compaction sweep rewrites it as a snapshot (FIRST plus the removed
sequences still in segments) in three steps, so that the slow part runs
off the reactor thread: ``plan_rewrite`` (reactor thread: the snapshot's
bytes; from now on appends are also kept aside), ``build_rewrite`` (a
worker thread: temp file, fsync), ``finish_rewrite`` (reactor thread: the
appends kept aside go after the snapshot, rename over the file).

The file is opened for each append and fsynced by path (by the store): it
holds no descriptor between writes (a file stream keeps one open file, see
filestore.py).
"""

from __future__ import annotations

import os

from flowmq.core.store import records
from flowmq.core.store.files import mapped, truncate_torn_tail, write_all

FILE_NAME = "tombstones.log"
#: The temp file of a rewrite (a leftover of a crash is removed at start-up).
REWRITE_SUFFIX = ".compact"


class TombstoneLog:
    """Appends markers to, loads and rewrites one stream's tombstone file.

    ``first``: the FIRST sequence last written (or loaded); ``size``: bytes.
    """

    def __init__(self, directory: str, stream: str):
        self.path = os.path.join(directory, FILE_NAME)
        self.stream = stream
        self.first = 0
        self.size = 0
        self._aside = None  # bytearray: what was appended since plan_rewrite

    def load(self):
        """Read the markers: ``(first, deleted seqs (a set), highest seq named)``.
        The file is created if missing (it marks a file stream's directory)."""
        with mapped(self.path) as data:
            found, stop = records.decode(data)
            file_size = len(data)
        if stop < file_size:
            truncate_torn_tail(self.stream, self.path, "tombstone file", stop, file_size)
        deleted: set = set()
        for record in found:
            if record.type == records.FIRST:
                self.first = max(self.first, record.seq)
            elif record.type == records.DELETED:
                deleted.update(records.deleted_seqs(record.payload))
        self.size = stop
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644))
        return self.first, deleted, max(deleted, default=0)

    def append(self, first: int, seqs) -> bool:
        """Record that ``first`` is the first sequence and ``seqs`` are gone;
        True if anything was written (to fsync)."""
        parts = []
        if first != self.first:
            parts.append(records.encode_first(first))
        if seqs:
            parts.append(records.encode_deleted(seqs))
        if parts:
            data = b"".join(parts)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                write_all(fd, data)
            except OSError:
                os.ftruncate(fd, self.size)  # a partial record would hide the markers after it
                raise
            finally:
                os.close(fd)
            self.first = first  # only once written: a failed write is retried whole
            self.size += len(data)
            if self._aside is not None:
                self._aside += data
            return True
        return False

    def plan_rewrite(self, first: int, seqs) -> bytes:
        """The snapshot ``FIRST(first)`` + ``DELETED(seqs)``; appends are kept
        aside from now on, until ``finish_rewrite``."""
        chunk = 1 << 16
        parts = [records.encode_first(first)]
        parts.extend(records.encode_deleted(seqs[i : i + chunk]) for i in range(0, len(seqs), chunk))
        self._aside = bytearray()
        return b"".join(parts)

    def build_rewrite(self, data: bytes) -> None:
        """Write the snapshot to the temp file, durably (any thread: touches no state)."""
        fd = os.open(self.path + REWRITE_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def finish_rewrite(self, data: bytes, built: bool) -> bool:
        """Swap the snapshot in (``built``: build_rewrite succeeded), with the
        appends kept aside after it; True if the file was replaced (its new
        tail and the directory are then to be fsynced)."""
        aside, self._aside = self._aside, None
        temp = self.path + REWRITE_SUFFIX
        if built:
            try:
                if aside:
                    fd = os.open(temp, os.O_WRONLY | os.O_APPEND)
                    try:
                        write_all(fd, aside)
                    finally:
                        os.close(fd)
                os.replace(temp, self.path)
            except OSError:
                built = False
            else:
                self.size = len(data) + len(aside)
                return True
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        return False
