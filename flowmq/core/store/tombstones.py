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
it is rewritten as a snapshot (FIRST plus the removed sequences still in
segments): temp file, fsync, rename.

The file is opened for each append and fsynced by path: it holds no
descriptor between writes (a file stream keeps one open file, see
filestore.py).
"""

from __future__ import annotations

import os

from flowmq.core.store import records
from flowmq.core.store.files import fsync_path, mapped, replace_file, truncate_torn_tail, write_all

FILE_NAME = "tombstones.log"


class TombstoneLog:
    """Appends markers to, loads and rewrites one stream's tombstone file.

    ``first``: the FIRST sequence last written (or loaded); ``size``: bytes.
    """

    def __init__(self, directory: str, stream: str):
        self.path = os.path.join(directory, FILE_NAME)
        self.stream = stream
        self.first = 0
        self.size = 0
        self._unsynced = False

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

    def append(self, first: int, seqs) -> None:
        """Record that ``first`` is the first sequence and ``seqs`` are gone."""
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
            self._unsynced = True

    def rewrite(self, first: int, seqs) -> None:
        """Replace the file by a snapshot: FIRST(first) and DELETED(seqs), durably."""
        chunk = 1 << 16
        parts = [records.encode_first(first)]
        parts.extend(records.encode_deleted(seqs[i : i + chunk]) for i in range(0, len(seqs), chunk))
        data = b"".join(parts)
        replace_file(self.path, data, durable=True)
        self.first = first
        self.size = len(data)
        self._unsynced = False

    def sync(self) -> None:
        if self._unsynced:
            fsync_path(self.path)
            self._unsynced = False
