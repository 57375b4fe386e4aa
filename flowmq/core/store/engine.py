"""StorageEngine: the data directory, its streams, flushing and fsync policy.

Layout: durable things are namespaced by *kind*, the protocol that owns
them (``KINDS``: "jetstream", "kafka", "amqp", "mqtt"), so a JetStream
stream, a Kafka topic and an AMQP queue of the same name never collide::

    <data_dir>/<kind root>/<safe name>/      one directory per stream of that kind
        *.log, *.idx, tombstones.log         a FileStore (filestore.py)
        meta/<safe key>.json                 documents: "config", "consumer.<name>" ...
        consumers/<safe name>/               a durable consumer's files (core/streams/state.py)

A kind's root is ``streams`` for JetStream (where JetStream's streams have
always been: a data directory from before the namespacing is read in place,
nothing is moved, and it still works after a downgrade) and the kind's name
for the others (``<data_dir>/kafka/...``). Every method that names a stream
takes the kind first; an unknown kind is a ValueError.

Stream names and meta keys may be any non-empty string; their file names
are escaped (names.py). One too long for a file name is shortened with a
hash, and the name is kept beside it: a stream's in ``<dir>/name``, a
key's in ``meta/<file name>.key``.

A file stream's directory holds ``tombstones.log`` from its first open
on: that is how ``stream_names`` tells file streams from the directories
that only hold a memory stream's meta documents (memory streams are not
listed; their messages do not outlive the process).

Off the reactor thread: fsync, compaction (segment and tombstone rewrites)
and the removal of a deleted stream's (or consumer's) directory run on a
DiskWorker (worker.py: one job at a time, in order, in Twisted's thread
pool when one is given; inline otherwise). Appends, reads and the write()
of buffered records stay on the reactor thread; a file being rewritten is
built aside and renamed over the old one on the reactor thread
(filestore.py). A removed directory is first renamed to
``<data_dir>/.removing-<n>-<entry>`` (so the name can be used again at
once), then deleted by the worker; start-up deletes any that a crash left.

Small whole files (meta documents, name sidecars, a consumer's
configuration and snapshots: ``replace_file``) are written to a temp file
on the reactor thread; under "always" the worker fsyncs it, renames it over
the old one and fsyncs the directory, so a crash leaves the old file or the
new one, never a torn one ("interval" renames at once and fsyncs at the
next interval sync, "never" never). The worker runs jobs in order:
a stream's configuration is durable before any fsync of its messages that
a later PubAck waits for. (The API reply itself does not wait for it, as
nats-server answers STREAM.CREATE and CONSUMER.CREATE without waiting for
its meta files unless it syncs always; the crash window is one worker job.)
Under "always" a document deleted (``delete_meta``) goes in a worker job
too, after any write of it still queued.

Batching: a FileStore reports its first change after a flush; the engine
collects such dirty stores and calls ``on_dirty()`` once per dirty period
(the broker schedules ``flush_all`` with it, before it acknowledges).
``flush_all`` writes every dirty store and returns a Deferred of the
stores whose write failed, which fires, by policy:

- "always": once the worker has fsynced what each store wrote (the fsyncs
  of one flush_all are one job);
- "interval": at once; a ``clock.callLater(fsync_interval)`` timer (if
  none is pending) later fsyncs, on the worker, the stores written since
  and the meta documents (not every store: an idle one costs nothing);
  without a clock, ``flush_all`` syncs when the interval has passed;
- "never": at once; no fsync until ``close``; the OS decides.

Its callers (the broker) start the next flush_all once the previous one
fired, so the writes of everything appended during an fsync go out
together and are fsynced together (group commit).

One store's failure (a full disk, or a bug) is logged and costs that store
only: flush, sync, compaction and close go on with the others.

Compaction sweep: every ``compact_interval`` seconds, over the stores that
changed since the last sweep only (an idle store costs nothing).

Open files: a file stream holds one descriptor (filestore.py), so the
engine opens at most ``max_file_streams`` of them: half of the process's
open-file limit (RLIMIT_NOFILE, its soft value), the other half being left
to client connections and the files opened for a moment (reads of sealed
segments, meta documents). Opening one more raises TooManyStreams, which
names the limit; raise ``ulimit -n`` for more.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import shutil
import time

from twisted.internet.defer import succeed

from flowmq.core.store.datatypes import Limits, TooManyStreams
from flowmq.core.store.files import fsync_path, log, replace_file, write_file
from flowmq.core.store.filestore import FileStore
from flowmq.core.store.memory import MemoryStore
from flowmq.core.store.names import file_name, is_hashed, unsafe_name
from flowmq.core.store.tombstones import FILE_NAME as TOMBSTONES
from flowmq.core.store.worker import DiskWorker

POLICIES = ("always", "interval", "never")
#: The kinds of durable things, and each one's directory under the data directory.
KINDS = {"jetstream": "streams", "kafka": "kafka", "amqp": "amqp", "mqtt": "mqtt"}
#: Seconds before a store whose write failed is tried again.
RETRY_DELAY = 1.0
_META = "meta"
_META_SUFFIX = ".json"
#: Sidecars of shortened file names (names.py): the stream's name, a key.
_NAME_FILE = "name"
_KEY_SUFFIX = ".key"
#: A removed stream's directory, renamed before the worker deletes it.
_REMOVING = ".removing-"
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


def _fsync_all(work: dict) -> dict:
    """fsync each store's paths (a worker thread); ``{store: (error, paths left)}`` of those that failed."""
    errors = {}
    for store, paths in work.items():
        for position, path in enumerate(paths):
            try:
                fsync_path(path)
            except FileNotFoundError:
                pass  # gone since: a segment whose messages all went, a removed stream
            except OSError as error:
                errors[store] = (error, paths[position:])
                break
    return errors


def _remove_tree(directory: str, parents, durable: bool) -> None:
    """Delete a removed directory (a worker thread), then make its absence durable."""
    shutil.rmtree(directory, ignore_errors=True)
    if durable:
        for parent in parents:
            fsync_path(parent)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _put_in_place(temp: str, path: str, then) -> None:
    """fsync ``temp``, rename it over ``path``, fsync the directory, delete
    ``then`` (a worker thread). Nothing to do if its directory went meanwhile."""
    try:
        fsync_path(temp)
        os.replace(temp, path)
        fsync_path(os.path.dirname(path))
    except FileNotFoundError:
        return  # removed since (a deleted stream or consumer)
    for old in then:
        _unlink(old)


def _delete_durably(paths, directory: str) -> None:
    """Delete ``paths`` and fsync their ``directory`` (a worker thread)."""
    for path in paths:
        _unlink(path)
    try:
        fsync_path(directory)
    except FileNotFoundError:
        pass


class StorageEngine:
    """Opens streams under ``data_dir`` and applies the flush/fsync policy.

    ``reactor`` and ``threadpool``: where the slow file work runs (both, or
    neither: then it runs inline, on the caller's thread).
    """

    def __init__(
        self,
        data_dir,
        fsync="interval",
        fsync_interval=1.0,
        segment_bytes=64 * 1024 * 1024,
        clock=None,
        on_dirty=None,
        compact_interval=60.0,
        reactor=None,
        threadpool=None,
    ):
        if fsync not in POLICIES:
            raise ValueError("fsync policy must be one of %s, not %r" % (", ".join(POLICIES), fsync))
        self.data_dir = data_dir
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.clock = clock
        self.on_dirty = on_dirty
        self.worker = DiskWorker(reactor, threadpool)
        self.open_file_limit = open_file_limit()
        #: Most file streams open at once (None: no limit).
        self.max_file_streams = None if self.open_file_limit < 0 else int(self.open_file_limit * FILE_STREAM_SHARE)
        self._stores: dict = {}  # (kind, name) -> store
        self._dirty: dict = {}  # FileStore -> None, in the order they became dirty
        self._changed: dict = {}  # FileStore -> None: changed since the last compaction sweep
        self._to_sync: dict = {}  # FileStore -> None: written since the last interval sync
        self._signalled = False  # on_dirty called since the last flush_all
        self._timer = None
        self._retry = None  # the timer that retries stores whose write failed
        self._unsynced_meta: set = set()  # meta paths (and their directories) to fsync
        self._last_sync = time.monotonic()
        self._removals = itertools.count()
        self._temps = itertools.count()
        self._batch = None  # paths of sync_paths calls inside one_sync(), one job at its end
        for root in KINDS.values():
            os.makedirs(os.path.join(data_dir, root), exist_ok=True)
        for directory in [data_dir] + [os.path.join(data_dir, root) for root in KINDS.values()]:
            for entry in os.listdir(directory):
                if entry.startswith(_REMOVING):  # a removal that a crash cut short (in a root: older versions)
                    self.worker.run(_remove_tree, os.path.join(directory, entry), (), False)
        # Space of messages removed from the middle of a segment is won back
        # by a sweep every compact_interval seconds (whole dead segments go at once).
        self.compact_interval = compact_interval
        self._compactor = None
        if clock is not None and compact_interval:
            self._compactor = clock.callLater(compact_interval, self._compact_all)

    def _root(self, kind: str) -> str:
        """The directory of the kind's streams; ValueError for an unknown kind."""
        root = KINDS.get(kind) if isinstance(kind, str) else None
        if root is None:
            raise ValueError("kind must be one of %s, not %r" % (", ".join(sorted(KINDS)), kind))
        return os.path.join(self.data_dir, root)

    def _stream_dir(self, kind: str, name: str, create: bool = False) -> str:
        """The stream's directory; ``create``: make it (with its name sidecar if needed)."""
        root = self._root(kind)
        if not name:
            raise ValueError("a stream name must not be empty")
        entry = file_name(name)
        directory = os.path.join(root, entry)
        if create:
            os.makedirs(directory, exist_ok=True)
            if is_hashed(entry):
                self._write_sidecar(os.path.join(directory, _NAME_FILE), name)
        return directory

    def _write_sidecar(self, path: str, name: str) -> None:
        if not os.path.exists(path):
            self.replace_file(path, name.encode("utf-8", "surrogatepass"))

    # -- streams ---------------------------------------------------------------

    def open_stream(self, kind: str, name: str, limits: Limits | None = None, storage: str = "file", sizer=None):
        """The stream's store, recovered from disk or new. A stream already
        open is returned as it is (with ``limits`` applied, if given).
        ``sizer``: how a message counts toward the stream's bytes (see base.py).
        TooManyStreams when ``max_file_streams`` file streams are open."""
        key = (kind, name)
        store = self._stores.get(key)
        if store is not None:
            if isinstance(store, MemoryStore) != (storage == "memory"):
                raise ValueError("stream %r is open with another storage" % (name,))
            if limits is not None:
                store.update_limits(limits)
            return store
        if storage == "memory":
            self._root(kind)
            store = MemoryStore(limits, sizer)
        elif storage == "file":
            self._root(kind)
            if self.max_file_streams is not None and self.file_streams() >= self.max_file_streams:
                raise TooManyStreams(
                    "%d file streams are open, as many as the open-file limit allows (half of "
                    "RLIMIT_NOFILE %d: raise it with ulimit -n, or use memory storage)"
                    % (self.max_file_streams, self.open_file_limit))
            store = FileStore(
                self._stream_dir(kind, name, create=True),
                limits,
                name=name if kind == "jetstream" else "%s %s" % (kind, name),
                segment_bytes=self.segment_bytes,
                on_dirty=self._store_dirty,
                sizer=sizer,
            )
        else:
            raise ValueError("storage must be 'file' or 'memory', not %r" % (storage,))
        self._stores[key] = store
        return store

    def file_streams(self) -> int:
        """How many file streams are open."""
        return sum(isinstance(store, FileStore) for store in self._stores.values())

    def close_stream(self, kind: str, name: str) -> None:
        """Close the stream (if open), leaving its files as they are."""
        store = self._stores.pop((kind, name), None)
        if store is not None:
            self._forget(store)
            self._try(store, store.close, set())

    def _forget(self, store) -> None:
        self._dirty.pop(store, None)
        self._changed.pop(store, None)
        self._to_sync.pop(store, None)

    def remove_stream(self, kind: str, name: str) -> None:
        """Close the stream (if open) and delete its directory, meta included:
        renamed aside at once (the name may be used again), deleted by the worker."""
        directory = self._stream_dir(kind, name)
        store = self._stores.pop((kind, name), None)
        if store is not None:
            self._forget(store)
            if isinstance(store, FileStore):
                store.discard()  # no sync: its files go
        self.discard_directory(directory)

    def discard_directory(self, directory: str) -> None:
        """Delete ``directory`` (a stream's, a consumer's): renamed aside at
        once (its name may be used again), deleted by the worker."""
        self._unsynced_meta = {path for path in self._unsynced_meta if not path.startswith(directory + os.sep)}
        parent = os.path.dirname(directory)
        aside = os.path.join(self.data_dir, "%s%d-%s" % (_REMOVING, next(self._removals), os.path.basename(directory)))
        try:
            os.rename(directory, aside)
        except FileNotFoundError:
            return
        self.worker.run(_remove_tree, aside, (parent, self.data_dir), self.fsync != "never").addErrback(
            lambda failure: log.failure("removing {path} failed", failure, path=aside))

    def stream_names(self, kind: str) -> list:
        """The names of the kind's file streams on disk."""
        root = self._root(kind)
        names = []
        for entry in os.listdir(root):
            directory = os.path.join(root, entry)
            if not entry.startswith(_REMOVING) and os.path.exists(os.path.join(directory, TOMBSTONES)):
                name = _read_sidecar(os.path.join(directory, _NAME_FILE)) if is_hashed(entry) else unsafe_name(entry)
                if name is not None:
                    names.append(name)
        return sorted(names)

    # -- flushing --------------------------------------------------------------

    def _store_dirty(self, store) -> None:
        self._dirty[store] = None
        self._changed[store] = None
        if not self._signalled:
            self._signalled = True
            if self.on_dirty is not None:
                self.on_dirty()

    def flush_all(self):
        """Write every dirty store to the OS; fsync by policy. Returns a
        Deferred of the stores whose write or fsync failed (disk full, I/O
        error): they stay dirty and are tried again a second later. Under
        "always" it fires once the fsync has returned (see the module
        docstring), always on the caller's (the reactor) thread."""
        failed, fsync = self.write_all()
        return succeed(failed) if fsync is None else fsync

    def write_all(self):
        """``flush_all`` without a Deferred when no fsync is waited for (the
        hot path of "interval" and "never"): ``(failed, None)`` when done,
        else ``(None, the Deferred of flush_all)``."""
        dirty, self._dirty = self._dirty, {}
        self._signalled = False
        failed: set = set()
        for store in dirty:
            self._try(store, store.flush, failed)
        if self.fsync == "always":
            work = {}
            for store in dirty:
                if store not in failed:
                    paths = store.take_unsynced()
                    if paths:
                        work[store] = paths
            if work:
                return None, self.worker.run(_fsync_all, work).addCallback(self._synced, failed)
        elif self.fsync == "interval" and dirty:
            self._to_sync.update(dirty)
            self._schedule_sync()
        if failed:
            self._retry_later(failed)
        return failed, None

    def _synced(self, errors: dict, failed: set) -> set:
        """The fsyncs of a flush_all returned: stores that failed keep their paths to fsync."""
        for store, (error, paths) in errors.items():
            log.error("stream {name}: writing to disk failed: {error}", name=store.name, error=error)
            store.give_back(paths)
            failed.add(store)
        if failed:
            self._retry_later(failed)
        return failed

    def _retry_later(self, failed: set) -> None:
        """Keep the failed stores dirty, and try them again in a second (not
        at once: a full disk would make that a busy loop of errors)."""
        for store in failed:
            if store in self._stores.values():
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

    def _sync_all(self, stores=None):
        """fsync (on the worker) the file stores written since the last time
        (``stores``: these) and the meta documents; a Deferred that fires when done."""
        self._last_sync = time.monotonic()
        if stores is None:
            stores, self._to_sync = self._to_sync, {}
        failed: set = set()
        work = {}
        for store in stores:
            if isinstance(store, FileStore):
                paths = []
                self._try(store, lambda: paths.extend(store.take_unsynced()), failed)
                if paths:
                    work[store] = paths
        pending, self._unsynced_meta = self._unsynced_meta, set()
        if pending:
            work[None] = sorted(pending, key=len, reverse=True)  # files before their directories
        if not work:
            self._sync_all_done({}, failed)
            return succeed(None)
        return self.worker.run(_fsync_all, work).addCallback(self._sync_all_done, failed)

    def _sync_all_done(self, errors: dict, failed: set) -> None:
        for store, (error, paths) in errors.items():
            if store is None:
                log.error("{path}: fsync failed: {error}", path=paths[0], error=error)
                self._unsynced_meta.update(paths)  # tried again at the next sync
            else:
                log.error("stream {name}: writing to disk failed: {error}", name=store.name, error=error)
                store.give_back(paths)
                failed.add(store)
        if failed:
            self._retry_later(failed)

    def _compact_all(self) -> None:
        """The sweep: plan a compaction of each store changed since the last
        sweep; the worker builds the new files, the reactor swaps them in."""
        self._compactor = self.clock.callLater(self.compact_interval, self._compact_all)
        changed, self._changed = self._changed, {}
        for store in changed:
            plans = []
            self._try(store, lambda: plans.append(store.plan_compaction()), set())
            if plans and plans[0] is not None:
                self.worker.run(plans[0].build).addBoth(self._compacted, store, plans[0])

    def _compacted(self, result, store, plan) -> None:
        if result is not None:  # a Failure: a bug, not a disk error (build keeps those)
            log.failure("stream {name}: compaction failed", result, name=plan.name)
        for path, error in plan.errors:
            log.error("stream {name}: compaction of {file} failed: {error}", name=plan.name,
                      file=os.path.basename(path), error=error)
        self._try(store, lambda: store.finish_compaction(plan), set())
        if self.fsync != "never" and store in self._stores.values():
            self._sync_all([store])  # the renames (and the snapshot's tail) are durable soon, not at the next append

    def close(self):
        """Flush, fsync and close every store once the worker's jobs are
        done; cancel the timers. A Deferred that fires when all is closed."""
        for call in (self._timer, self._compactor, self._retry):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._compactor = self._retry = None
        self.flush_all()
        self._sync_all(list(self._stores.values()))
        return self.worker.idle().addCallback(self._close_stores)

    def _close_stores(self, _ignored=None) -> None:
        for store in self._stores.values():
            self._try(store, store.close, set())
        self._stores.clear()

    # -- meta documents --------------------------------------------------------

    def _meta_path(self, kind: str, stream: str, key: str, create: bool = False) -> str:
        """The document's path; ``create``: make its directory (and key sidecar if needed)."""
        if not key:
            raise ValueError("a meta key must not be empty")
        directory = os.path.join(self._stream_dir(kind, stream, create), _META)
        stem = file_name(key)
        if create:
            os.makedirs(directory, exist_ok=True)
            if is_hashed(stem):
                self._write_sidecar(os.path.join(directory, stem + _KEY_SUFFIX), key)
        return os.path.join(directory, stem + _META_SUFFIX)

    def write_meta(self, kind: str, stream: str, key: str, document) -> None:
        """Store a JSON-able document atomically (temp file, rename)."""
        path = self._meta_path(kind, stream, key, create=True)
        self.replace_file(path, json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8"))

    def read_meta(self, kind: str, stream: str, key: str):
        """The document, or None if there is none (or it cannot be read)."""
        path = self._meta_path(kind, stream, key)
        try:
            with open(path, "rb") as handle:
                return json.loads(handle.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warn("stream {stream}: meta document {key} is unreadable: {error}", stream=stream, key=key, error=error)
            return None

    def delete_meta(self, kind: str, stream: str, key: str) -> None:
        """Delete a document (and its key sidecar): under "always" a worker
        job (after any write of it still queued) that fsyncs the directory
        too; else at once (the directory synced by the policy)."""
        path = self._meta_path(kind, stream, key)
        paths = [path]
        if is_hashed(os.path.basename(path)[: -len(_META_SUFFIX)]):
            paths.append(path[: -len(_META_SUFFIX)] + _KEY_SUFFIX)
        if self.fsync != "always":
            for gone in paths:
                _unlink(gone)
            self.sync_paths((os.path.dirname(path),))
            return
        self.worker.run(_delete_durably, paths, os.path.dirname(path)).addErrback(
            lambda failure: log.failure("deleting {path} failed", failure, path=path))

    # -- whole files, made durable off the reactor thread ----------------------

    def replace_file(self, path: str, data: bytes, then=()) -> None:
        """Replace ``path`` with ``data`` atomically (see the module
        docstring): the bytes go to a temp file now (an OSError there is the
        caller's); under "always" the worker makes it durable and puts it in
        place, then deletes the files ``then`` (what the new file replaces).
        Under "interval" and "never" it is put in place at once; "interval"
        fsyncs it (and its directory) at the next interval sync."""
        if self.fsync != "always":
            replace_file(path, data, durable=False)
            for old in then:
                _unlink(old)
            self.sync_paths((path, os.path.dirname(path)))
            return
        temp = "%s.%d.tmp" % (path, next(self._temps))
        write_file(temp, data)
        self.worker.run(_put_in_place, temp, path, tuple(then)).addErrback(
            lambda failure: log.failure("{path}: writing it to disk failed", failure, path=path))

    @contextlib.contextmanager
    def one_sync(self):
        """The ``sync_paths`` calls made inside are one worker job, at the end
        (a save round of many consumers: one fsync job, not one each)."""
        if self._batch is not None:  # nested: the outer one syncs
            yield
            return
        self._batch = []
        try:
            yield
        finally:
            paths, self._batch = self._batch, None
            if paths:
                self.sync_paths(paths)

    # -- consumers' files (flowmq/core/streams/state.py) ----------------------

    def consumers_directory(self, kind: str, stream: str) -> str:
        """Where the stream's durable consumers keep their files, one directory each."""
        return os.path.join(self._stream_dir(kind, stream), "consumers")

    def sync_paths(self, paths) -> None:
        """Make these files and directories durable by the policy, off the
        reactor thread: "always" now (a worker job; inside ``one_sync``, at
        its end), "interval" at the next interval sync, "never" not at all."""
        if self._batch is not None and self.fsync == "always":
            self._batch.extend(paths)
        elif self.fsync == "always":
            work = {None: sorted(paths, key=len, reverse=True)}  # files before their directories
            self.worker.run(_fsync_all, work).addCallback(self._sync_all_done, set())
        elif self.fsync == "interval":
            self._unsynced_meta.update(paths)
            self._schedule_sync()

    def meta_keys(self, kind: str, stream: str, prefix: str = "") -> list:
        """The keys of the stream's documents that start with ``prefix``, sorted."""
        directory = os.path.join(self._stream_dir(kind, stream), _META)
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
