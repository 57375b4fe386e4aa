"""A payload put together from the reads it arrived in, copied once.

A protocol's decoder scans each read where it lies; a payload that began in
one read and ends in a later one is kept as those reads (the first with the
offset where the payload begins) and put together once it is complete.
PyPy and CPython copy in opposite ways: CPython copies a bytes slice when
it makes it and joins memoryviews with one copy, while PyPy's join copies
each memoryview into a bytes object first (two copies) and its JIT makes a
sum of two slices one copy. ``spliced`` takes each interpreter's one-copy
way; ``joined`` uses it for two reads, and for more the join, whose middle
reads (whole bytes objects) are copied once on both.
"""

from __future__ import annotations

import platform

if platform.python_implementation() == "PyPy":
    def spliced(first: bytes, start: int, second: bytes, stop: int) -> bytes:
        """``first[start:] + second[:stop]``, copied once (PyPy: its JIT
        makes the two slices and their sum one copy)."""
        return first[start:] + second[:stop]
else:
    def spliced(first: bytes, start: int, second: bytes, stop: int) -> bytes:
        """``first[start:] + second[:stop]``, copied once (CPython: a join
        of memoryviews)."""
        return b"".join((memoryview(first)[start:], memoryview(second)[:stop]))


def joined(reads: list, start: int, stop: int) -> bytes:
    """The bytes of ``reads`` from ``start`` in the first to ``stop`` in the
    last (two or more reads), with one copy of each byte but, for more than
    two reads on PyPy, of the two ends."""
    if len(reads) == 2:
        return spliced(reads[0], start, reads[1], stop)
    return b"".join([memoryview(reads[0])[start:]] + reads[1:-1] + [memoryview(reads[-1])[:stop]])
