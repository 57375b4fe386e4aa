"""Small file operations the storage engine shares: whole writes, fsync of a
path or a directory, atomic replacement, mapping a file for a scan, and
cutting off a torn tail."""

from __future__ import annotations

import contextlib
import mmap
import os

from flowmq.logs import logger

log = logger("flowmq.store")


def write_all(fd: int, data) -> None:
    """Write all of ``data`` at the file position (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_path(path: str) -> None:
    """fsync a file or directory by path (Linux flushes the inode, whichever fd wrote)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: str, data: bytes, durable: bool = False) -> None:
    """Create or truncate ``path`` and write ``data``; ``durable``: fsync it too."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str, data: bytes, durable: bool) -> None:
    """Write ``data`` to ``path`` atomically: a temp file renamed over it.
    ``durable``: fsync the temp file before the rename and the directory after."""
    temp = path + ".tmp"
    write_file(temp, data, durable)
    os.replace(temp, path)
    if durable:
        fsync_path(os.path.dirname(path) or ".")


@contextlib.contextmanager
def mapped(path: str):
    """The file's bytes as a read-only mmap (b"" when empty or missing), so a
    scan of a large or garbage-filled file allocates nothing up front."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        yield b""
        return
    with handle:
        if not os.fstat(handle.fileno()).st_size:
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


def truncate_torn_tail(stream: str, path: str, what: str, stop: int, file_size: int) -> None:
    """Cut ``path`` at ``stop`` (the first byte that is not a valid record) and say so once."""
    os.truncate(path, stop)
    log.warn(
        "stream {stream}: {what} {file} truncated at offset {offset}: dropped {dropped} bytes (torn or corrupt tail)",
        stream=stream,
        what=what,
        file=os.path.basename(path),
        offset=stop,
        dropped=file_size - stop,
    )
