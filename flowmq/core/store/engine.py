"""StorageEngine: the data directory, its streams, flushing and fsync policy.

Layout::

    <data_dir>/streams/<safe name>/          one directory per stream
        *.log, *.idx, tombstones.log         a FileStore (filestore.py)
        meta/<safe key>.json                 documents: "config", "consumer.<name>" ...
        consumers/<safe name>/               a durable consumer's files (core/streams/state.py)

Stream names and meta keys may be any non-empty string; their file names
are escaped (names.py). One too long for a file name is shortened with a
hash, and the name is kept beside it: a stream's in ``<dir>/name``, a
key's in ``meta/<file name>.key``.

A file stream's directory holds ``tombstones.log`` from its first open
on: that is how ``stream_names`` tells file streams from the directories
that only hold a memory stream's meta documents (memory streams are not
listed; their messages do not outlive the process).

Batching: a FileStore reports its first change after a flush; the engine
collects such dirty stores and calls ``on_dirty()`` once per dirty period
(the broker schedules ``flush_all`` with it, before it acknowledges).
``flush_all`` writes every dirty store and then, by policy:

- "always": fsyncs each store it flushed (and meta documents at once);
- "interval": arms a ``clock.callLater(fsync_interval)`` timer (if none is
  pending) that syncs every store and the meta documents written since;
  without a clock, ``flush_all`` syncs when the interval has passed;
- "never": no fsync until ``close``; the OS decides.

One store's failure (a full disk, or a bug) is logged and costs that store
only: flush, sync, compaction and close go on with the others.

Open files: a file stream holds one descriptor (filestore.py), so the
engine opens at most ``max_file_streams`` of them: half of the process's
open-file limit (RLIMIT_NOFILE, its soft value), the other half being left
to client connections and the files opened for a moment (reads of sealed
segments, meta documents). Opening one more raises TooManyStreams, which
names the limit; raise ``ulimit -n`` for more.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time

from flowmq.core.store.datatypes import Limits, TooManyStreams
from flowmq.core.store.files import fsync_path, log, replace_file
from flowmq.core.store.filestore import FileStore
from flowmq.core.store.memory import MemoryStore
from flowmq.core.store.names import file_name, is_hashed, unsafe_name
from flowmq.core.store.tombstones import FILE_NAME as TOMBSTONES

POLICIES = ("always", "interval", "never")
#: Seconds before a store whose write failed is tried again.
RETRY_DELAY = 1.0
_META = "meta"
_META_SUFFIX = ".json"
#: Sidecars of shortened file names (names.py): the stream's name, a key.
_NAME_FILE = "name"
_KEY_SUFFIX = ".key"
#: The share of the open-file limit that file streams may hold.
FILE_STREAM_SHARE = 0.5


def open_file_limit() -> int:
    """The process's soft limit of open files (RLIMIT_NOFILE); -1: unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return -1 if soft == resource.RLIM_INFINITY else soft


def _read_sidecar(path: str):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "surrogatepass")
    except (OSError, UnicodeDecodeError):
        return None


class StorageEngine:
    """Opens streams under ``data_dir`` and applies the flush/fsync policy."""

    def __init__(
        self,
        data_dir,
        fsync="interval",
        fsync_interval=1.0,
        segment_bytes=64 * 1024 * 1024,
        clock=None,
        on_dirty=None,
        compact_interval=60.0,
    ):
        if fsync not in POLICIES:
            raise ValueError("fsync policy must be one of %s, not %r" % (", ".join(POLICIES), fsync))
        self.data_dir = data_dir
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.clock = clock
        self.on_dirty = on_dirty
        self._streams_dir = os.path.join(data_dir, "streams")
        os.makedirs(self._streams_dir, exist_ok=True)
        self.open_file_limit = open_file_limit()
        #: Most file streams open at once (None: no limit).
        self.max_file_streams = None if self.open_file_limit < 0 else int(self.open_file_limit * FILE_STREAM_SHARE)
        self._stores: dict = {}  # name -> store
        self._dirty: dict = {}  # FileStore -> None, in the order they became dirty
        self._signalled = False  # on_dirty called since the last flush_all
        self._timer = None
        self._retry = None  # the timer that retries stores whose write failed
        self._unsynced_meta: set = set()  # meta paths (and their directories) to fsync
        self._last_sync = time.monotonic()
        # Space of messages removed from the middle of a segment is won back
        # by a sweep every compact_interval seconds (whole dead segments go at once).
        self.compact_interval = compact_interval
        self._compactor = None
        if clock is not None and compact_interval:
            self._compactor = clock.callLater(compact_interval, self._compact_all)

    def _stream_dir(self, name: str, create: bool = False) -> str:
        """The stream's directory; ``create``: make it (with its name sidecar if needed)."""
        if not name:
            raise ValueError("a stream name must not be empty")
        entry = file_name(name)
        directory = os.path.join(self._streams_dir, entry)
        if create:
            os.makedirs(directory, exist_ok=True)
            if is_hashed(entry):
                self._write_sidecar(os.path.join(directory, _NAME_FILE), name)
        return directory

    def _write_sidecar(self, path: str, name: str) -> None:
        if not os.path.exists(path):
            replace_file(path, name.encode("utf-8", "surrogatepass"), durable=self.fsync != "never")

    # -- streams ---------------------------------------------------------------

    def open_stream(self, name: str, limits: Limits | None = None, storage: str = "file", sizer=None):
        """The stream's store, recovered from disk or new. A stream already
        open is returned as it is (with ``limits`` applied, if given).
        ``sizer``: how a message counts toward the stream's bytes (see base.py).
        TooManyStreams when ``max_file_streams`` file streams are open."""
        store = self._stores.get(name)
        if store is not None:
            if isinstance(store, MemoryStore) != (storage == "memory"):
                raise ValueError("stream %r is open with another storage" % (name,))
            if limits is not None:
                store.update_limits(limits)
            return store
        if storage == "memory":
            store = MemoryStore(limits, sizer)
        elif storage == "file":
            if self.max_file_streams is not None and self.file_streams() >= self.max_file_streams:
                raise TooManyStreams(
                    "%d file streams are open, as many as the open-file limit allows (half of "
                    "RLIMIT_NOFILE %d: raise it with ulimit -n, or use memory storage)"
                    % (self.max_file_streams, self.open_file_limit))
            store = FileStore(
                self._stream_dir(name, create=True),
                limits,
                name=name,
                segment_bytes=self.segment_bytes,
                on_dirty=self._store_dirty,
                sizer=sizer,
            )
        else:
            raise ValueError("storage must be 'file' or 'memory', not %r" % (storage,))
        self._stores[name] = store
        return store

    def file_streams(self) -> int:
        """How many file streams are open."""
        return sum(isinstance(store, FileStore) for store in self._stores.values())

    def close_stream(self, name: str) -> None:
        """Close the stream (if open), leaving its files as they are."""
        store = self._stores.pop(name, None)
        if store is not None:
            self._dirty.pop(store, None)
            self._try(store, store.close, set())

    def remove_stream(self, name: str) -> None:
        """Close the stream (if open) and delete its directory, meta included."""
        self.close_stream(name)  # a failed close is logged: the files go anyway
        directory = self._stream_dir(name)
        self._unsynced_meta = {path for path in self._unsynced_meta if not path.startswith(directory + os.sep)}
        shutil.rmtree(directory, ignore_errors=True)
        if self.fsync != "never":
            fsync_path(self._streams_dir)

    def stream_names(self) -> list:
        """The names of the file streams on disk."""
        names = []
        for entry in os.listdir(self._streams_dir):
            directory = os.path.join(self._streams_dir, entry)
            if os.path.exists(os.path.join(directory, TOMBSTONES)):
                name = _read_sidecar(os.path.join(directory, _NAME_FILE)) if is_hashed(entry) else unsafe_name(entry)
                if name is not None:
                    names.append(name)
        return sorted(names)

    # -- flushing --------------------------------------------------------------

    def _store_dirty(self, store) -> None:
        self._dirty[store] = None
        if not self._signalled:
            self._signalled = True
            if self.on_dirty is not None:
                self.on_dirty()

    def flush_all(self) -> set:
        """Write every dirty store to the OS; fsync by policy. Returns the
        stores whose write failed (disk full, I/O error): they stay dirty
        and are tried again at the next flush_all."""
        dirty, self._dirty = self._dirty, {}
        self._signalled = False
        failed = set()
        for store in dirty:
            self._try(store, store.flush, failed)
        if self.fsync == "always":
            for store in dirty:
                if store not in failed:
                    self._try(store, store.sync, failed)
        elif self.fsync == "interval" and dirty:
            self._schedule_sync()
        if failed:
            self._retry_later(failed)
        return failed

    def _retry_later(self, failed: set) -> None:
        """Keep the failed stores dirty, and try them again in a second (not
        at once: a full disk would make that a busy loop of errors)."""
        for store in failed:
            self._dirty[store] = None
        if self.clock is not None and self._retry is None:
            self._retry = self.clock.callLater(RETRY_DELAY, self._retry_due)

    def _retry_due(self) -> None:
        self._retry = None
        if self._dirty and self.on_dirty is not None:
            self._signalled = True
            self.on_dirty()

    @staticmethod
    def _try(store, operation, failed: set) -> None:
        """Run one store's flush, sync, compact or close; a failure is logged
        and adds the store to ``failed``, so that the others still run."""
        try:
            operation()
        except OSError as e:
            log.error("stream {name}: writing to disk failed: {error}", name=getattr(store, "name", "?"), error=e)
            failed.add(store)
        except Exception:  # a bug in one store: the others must still reach the disk
            log.failure("stream {name}: {operation} failed", name=getattr(store, "name", "?"),
                        operation=operation.__name__)
            failed.add(store)

    def _schedule_sync(self) -> None:
        if self.clock is None:
            if time.monotonic() - self._last_sync >= self.fsync_interval:
                self._sync_all()
        elif self._timer is None:
            self._timer = self.clock.callLater(self.fsync_interval, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._sync_all()

    def _sync_all(self) -> None:
        """fsync every file store and the meta documents written since the last time."""
        self._last_sync = time.monotonic()
        failed: set = set()
        for store in self._stores.values():
            self._try(store, store.sync, failed)
        if failed:
            self._retry_later(failed)
        pending, self._unsynced_meta = self._unsynced_meta, set()
        for path in sorted(pending, key=len, reverse=True):  # files before their directories
            try:
                fsync_path(path)
            except FileNotFoundError:
                pass  # deleted since
            except OSError as e:
                log.error("{path}: fsync failed: {error}", path=path, error=e)
                self._unsynced_meta.add(path)  # tried again at the next sync

    def _compact_all(self) -> None:
        self._compactor = self.clock.callLater(self.compact_interval, self._compact_all)
        for store in list(self._stores.values()):
            if isinstance(store, FileStore):
                self._try(store, store.compact, set())

    def close(self) -> None:
        """Flush, fsync and close every store; cancel the timers."""
        for call in (self._timer, self._compactor, self._retry):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._compactor = self._retry = None
        self.flush_all()
        self._sync_all()
        for store in self._stores.values():
            self._try(store, store.close, set())
        self._stores.clear()

    # -- meta documents --------------------------------------------------------

    def _meta_path(self, stream: str, key: str, create: bool = False) -> str:
        """The document's path; ``create``: make its directory (and key sidecar if needed)."""
        if not key:
            raise ValueError("a meta key must not be empty")
        directory = os.path.join(self._stream_dir(stream, create), _META)
        stem = file_name(key)
        if create:
            os.makedirs(directory, exist_ok=True)
            if is_hashed(stem):
                self._write_sidecar(os.path.join(directory, stem + _KEY_SUFFIX), key)
        return os.path.join(directory, stem + _META_SUFFIX)

    def write_meta(self, stream: str, key: str, document) -> None:
        """Store a JSON-able document atomically (temp file, rename)."""
        path = self._meta_path(stream, key, create=True)
        data = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
        replace_file(path, data, durable=self.fsync == "always")
        if self.fsync == "interval":
            self._unsynced_meta.update((path, os.path.dirname(path)))
            self._schedule_sync()

    def read_meta(self, stream: str, key: str):
        """The document, or None if there is none (or it cannot be read)."""
        path = self._meta_path(stream, key)
        try:
            with open(path, "rb") as handle:
                return json.loads(handle.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warn("stream {stream}: meta document {key} is unreadable: {error}", stream=stream, key=key, error=error)
            return None

    def delete_meta(self, stream: str, key: str) -> None:
        path = self._meta_path(stream, key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        if is_hashed(os.path.basename(path)):
            os.unlink(path[: -len(_META_SUFFIX)] + _KEY_SUFFIX)
        if self.fsync == "always":
            fsync_path(os.path.dirname(path))
        elif self.fsync == "interval":
            self._unsynced_meta.add(os.path.dirname(path))
            self._schedule_sync()

    # -- consumers' files (flowmq/core/streams/state.py) ----------------------

    def consumers_directory(self, stream: str) -> str:
        """Where the stream's durable consumers keep their files, one directory each."""
        return os.path.join(self._stream_dir(stream), "consumers")

    def sync_later(self, paths) -> None:
        """fsync these files and directories at the next interval sync."""
        self._unsynced_meta.update(paths)
        self._schedule_sync()

    def meta_keys(self, stream: str, prefix: str = "") -> list:
        """The keys of the stream's documents that start with ``prefix``, sorted."""
        directory = os.path.join(self._stream_dir(stream), _META)
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            return []
        keys = []
        for entry in entries:
            if entry.endswith(_META_SUFFIX):
                stem = entry[: -len(_META_SUFFIX)]
                if is_hashed(stem):
                    key = _read_sidecar(os.path.join(directory, stem + _KEY_SUFFIX))
                else:
                    key = unsafe_name(stem)
                if key is not None and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)
