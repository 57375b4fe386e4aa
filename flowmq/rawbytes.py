"""Bytes moved through reused buffers, the way a C broker moves them (PyPy).

On PyPy a kilobyte payload on its way to one NATS subscriber was written
four times: the kernel wrote each read into a new bytes object (PyPy's
``recv`` receives into the object it returns), the parser sliced the
payload out of it, a join made the frames, and the kernel copied them
out. The first three wrote to memory that had not been touched lately
(new objects, a nursery of many megabytes), past the CPU's caches. Here a
run of PUBs to one subscriber takes a C broker's path:

- a plain TCP connection reads into the one ``READ_BUFFER`` of the process
  (``recv_into``, flowmq.transport), reused by every read, so the kernel
  writes to memory that is in the cache;
- the NATS parser hands out a run's payloads as a ``PayloadRun``: where
  they lie in that buffer, not copied (``NatsParser.feed_read_buffer``);
- the subscriber's frames are made with ``memmove`` straight from the
  read buffer into an ``OutputBuffer`` (lent from a small pool and given
  back once the socket took it), and the socket sends from there.

So such a payload is copied once in user space, between two buffers that
stay in the cache. Whatever needs the payloads as bytes (another
protocol, a stream, a queue group's shares, a fan-out's shared frames)
asks the PayloadRun, which copies them out then, once. A PayloadRun is
valid only during the read that made it, the read buffer being reused by
the next: each read ends with ``end_read()``, after which a PayloadRun
raises instead of handing out the bytes of a later read. Payloads under
``OUTPUT_FROM`` bytes keep the bytes path (per frame, calls through cffi
cost more than the copies they save), and so do those of 8 KiB and more,
which go out as pieces of their own anyway (flowmq.connection's
GATHER_WRITE_AT).

It takes cffi, which is part of PyPy. CPython keeps the bytes objects
(``ENABLED`` is False): its cost per message is the interpreter's
(docs/PERFORMANCE.md, "Reused buffers"). The tests use the buffers on
CPython too (cffi is a test dependency there).
"""

from __future__ import annotations

import platform

#: The size of the read buffer: Twisted's read size (``bufferSize``).
READ_SIZE = 65536
#: The size of one OutputBuffer: a read's frames and more (a MSG line is
#: at most a little longer than the PUB line it replaces).
OUTPUT_SIZE = 262144
#: The smallest payload read into the read buffer (NatsParser.takes_read_buffer):
#: below it a comparison and two copies per frame through cffi cost more
#: than slicing and joining bytes (docs/PERFORMANCE.md, "Reused buffers").
OUTPUT_FROM = 512
#: Free OutputBuffers kept for reuse; more are made while a batch needs them.
_POOL_SIZE = 8

try:
    import cffi
    _ffi = cffi.FFI()
    _ffi.cdef("int memcmp(const void *, const void *, size_t);")
    _libc = _ffi.dlopen(None)  # the C library (POSIX)
except (ImportError, OSError):  # CPython without cffi (PyPy has it built in), or no C library to open
    _ffi = None

#: The buffers can be made: the tests use them on either interpreter.
AVAILABLE = _ffi is not None
#: Connections read into the buffers: on PyPy only.
ENABLED = AVAILABLE and platform.python_implementation() == "PyPy"

if AVAILABLE:
    #: ``memcmp(pointer, bytes, size)``: 0 when they are alike.
    memcmp = _libc.memcmp
    _memmove = _ffi.memmove
    _allocate = _ffi.new_allocator(should_clear_after_alloc=False)
    #: The process's read buffer (a cffi char array) and a buffer view of it for ``recv_into``.
    READ_BUFFER = _allocate("char[]", READ_SIZE)
    READ_VIEW = _ffi.buffer(READ_BUFFER, READ_SIZE)

_reads = [0]  # how many reads have ended: a PayloadRun's read is over once it moved on


def read_bytes(start: int, stop: int) -> bytes:
    """A copy of the read buffer from ``start`` to ``stop``."""
    return READ_VIEW[start:stop]


def end_read() -> None:
    """The read buffer is about to be reused: every PayloadRun of this read is over."""
    _reads[0] += 1


class PayloadRun:
    """The payloads of a run of PUBs (a list-like sequence of bytes): the
    ``head`` payloads, bytes that were completed from an earlier read,
    then ``count`` payloads of ``size`` bytes in the read buffer, the first
    at ``start`` and each ``stride`` bytes after the one before, each
    followed by its CRLF. Sliced out of the buffer the first time a
    consumer needs them as bytes, and only during the read that made it."""

    __slots__ = ("head", "start", "count", "stride", "size", "_read", "_payloads")

    def __init__(self, head: list, start: int, count: int, stride: int, size: int):
        self.head = head
        self.start = start
        self.count = count
        self.stride = stride
        self.size = size
        self._read = _reads[0]
        self._payloads = None

    def _check(self) -> None:
        if self._read != _reads[0]:
            raise RuntimeError("a PayloadRun was used after the read that made it")

    def payloads(self) -> list:
        """Every payload as bytes, sliced out once."""
        payloads = self._payloads
        if payloads is None:
            self._check()
            size, stride = self.size, self.stride
            payloads = list(self.head)
            for start in range(self.start, self.start + stride * self.count, stride):
                payloads.append(READ_VIEW[start:start + size])
            self._payloads = payloads
        return payloads

    def __len__(self):
        return len(self.head) + self.count

    def __getitem__(self, index):
        if index == 0 and self._payloads is None:  # the run's first Message: no need to slice them all
            if self.head:
                return self.head[0]
            self._check()
            return read_bytes(self.start, self.start + self.size)
        return self.payloads()[index]

    def __iter__(self):
        return iter(self.payloads())


class OutputBuffer:
    """Frames waiting for one connection's socket, in reused memory;
    ``borrow()`` one, give it back with ``release()`` once its bytes are
    sent or copied."""

    __slots__ = ("memory", "filled")

    def __init__(self):
        self.memory = _allocate("char[]", OUTPUT_SIZE)
        self.filled = 0

    def add_run(self, line: bytes, run: PayloadRun) -> bool:
        """Append a frame per payload of ``run``: ``line`` (the MSG line),
        the payload, CRLF; False, with nothing appended, when they do not
        fit."""
        size = run.size
        line_size = len(line)
        filled = self.filled
        if filled + (line_size + size + 2) * len(run) > OUTPUT_SIZE:
            return False
        run._check()
        memory = self.memory
        for payload in run.head:
            _memmove(memory + filled, line + payload + b"\r\n", line_size + size + 2)
            filled += line_size + size + 2
        if run.count:
            # The line is copied from bytes once, then from where it lies:
            # a bytes argument costs PyPy more than a copy between two
            # pointers (it may have to pin or copy the object first).
            _memmove(memory + filled, line, line_size)
            line_at = memory + filled
            source = READ_BUFFER + run.start
            for _ in range(run.count):
                _memmove(memory + filled, line_at, line_size)
                filled += line_size
                _memmove(memory + filled, source, size + 2)  # the payload and its CRLF, as they arrived
                filled += size + 2
                source += run.stride
        self.filled = filled
        return True

    def view(self):
        """The frames as a buffer (valid until the buffer is released)."""
        return _ffi.buffer(self.memory, self.filled)

    def release(self) -> None:
        self.filled = 0
        if len(_pool) < _POOL_SIZE:
            _pool.append(self)


_pool: list = []


def borrow() -> OutputBuffer:
    """An empty OutputBuffer: the one released last (its memory is the most
    likely in the cache), or a new one."""
    return _pool.pop() if _pool else OutputBuffer()
