"""The JetStream account: how much memory and file storage streams may use.

FlowMQ has one account, with nats-server's two storage limits
(``jetstream.max_memory``, ``jetstream.max_store``). Left unset they come
from the machine as nats-server derives its own (server/jetstream.go,
dynJetStreamConfig): 75% of the physical memory (256 MiB when it cannot be
read), and 75% of the disk space available to the data directory at
start-up (1 TiB when it cannot be read). -1 is no limit, 0 allows no stream
of that storage.

The limits hold in two places, as in nats-server:

- A stream create or update *reserves* its ``max_bytes``: if the other
  streams' reservations of the same storage plus its own pass the limit,
  it is refused (10028 "insufficient memory resources available", 10047
  "insufficient storage resources available"). A stream without
  ``max_bytes`` reserves nothing but still needs one free byte to be made.
- A publish that would take the bytes stored in all streams of that storage
  past the limit is refused before it is stored (10002 "resource limits
  exceeded for account"). The stores count those bytes themselves, in one
  ``Quota`` per storage (see flowmq.core.store), so the check costs O(1).
  As in nats-server, a message counts its subject, headers and payload plus
  16 bytes (the store's message size), so the limit bounds the stored
  bytes, not the process's memory (Python objects add their own overhead
  per message).
"""

from __future__ import annotations

import os
import shutil

from flowmq.core.store import Quota
from flowmq.logs import logger
from flowmq.nats.jetstream import errors
from flowmq.nats.jetstream.errors import ApiError

log = logger("flowmq.jetstream")

#: nats-server's fall-backs when the machine does not tell.
FALLBACK_MEMORY = 256 * 1024 * 1024
FALLBACK_STORE = 1024 ** 4
_SHORT = {"memory": errors.INSUFFICIENT_MEMORY, "file": errors.INSUFFICIENT_STORAGE}


def physical_memory():
    """The machine's physical memory in bytes, or None if it cannot be read."""
    try:
        size = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf, or not these names
        return None
    return size if size > 0 else None


def disk_available(path: str):
    """Bytes free to unprivileged users on the file system of ``path`` (or of
    its nearest existing parent), or None if that cannot be read."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def default_max_memory() -> int:
    total = physical_memory()
    return total // 4 * 3 if total is not None else FALLBACK_MEMORY


def default_max_store(data_dir: str) -> int:
    free = disk_available(data_dir)
    return free // 4 * 3 if free is not None else FALLBACK_STORE


class Account:
    """The limits, and the Quota that the stores of each storage count in."""

    def __init__(self, max_memory: int, max_store: int, from_machine=(False, False)):
        self.quotas = {"memory": Quota(max_memory), "file": Quota(max_store)}
        self._from_machine = from_machine  # (memory, store): derived, not set

    @classmethod
    def from_settings(cls, settings, data_dir: str) -> Account:
        """The account of the ``jetstream`` settings, defaults from the machine."""
        max_memory, max_store = settings.max_memory, settings.max_store
        return cls(default_max_memory() if max_memory is None else max_memory,
                   default_max_store(data_dir) if max_store is None else max_store,
                   (max_memory is None, max_store is None))

    def log_limits(self) -> None:
        """The start-up log line of the limits and where they came from."""
        log.info("JetStream limits: {memory} of memory{how_memory}, {store} of file storage{how_store}",
                 memory=_mib(self.quotas["memory"].limit), store=_mib(self.quotas["file"].limit),
                 how_memory=" (from the machine)" if self._from_machine[0] else "",
                 how_store=" (from the machine)" if self._from_machine[1] else "")

    @staticmethod
    def reserved(streams, storage: str, but: str = None) -> int:
        """The max_bytes that the streams of ``storage`` (but the one named ``but``) reserve."""
        return sum(stream.config["max_bytes"] for stream in streams
                   if stream.config["storage"] == storage and stream.config["max_bytes"] > 0
                   and stream.name != but)

    def check_reservation(self, config: dict, streams, creating: bool) -> None:
        """Raise ApiError if the stream's max_bytes does not fit beside the
        other streams' reservations (nats-server: checkBytesLimits)."""
        storage = config["storage"]
        limit = self.quotas[storage].limit
        if limit < 0:
            return
        wanted = config["max_bytes"] if config["max_bytes"] > 0 else int(creating)
        if self.reserved(streams, storage, but=config["name"]) + wanted > limit:
            raise ApiError(_SHORT[storage])

    def info(self, streams) -> dict:
        """The usage fields of $JS.API.INFO, and the limits' part of its "limits"."""
        streams = list(streams)
        memory, store = self.quotas["memory"], self.quotas["file"]
        return {
            "memory": memory.bytes, "storage": store.bytes,
            "reserved_memory": self.reserved(streams, "memory"),
            "reserved_storage": self.reserved(streams, "file"),
            "limits": {"max_memory": memory.limit, "max_storage": store.limit},
        }


def _mib(limit: int) -> str:
    return "no limit" if limit < 0 else "%.1f MiB" % (limit / 1024 / 1024)
