"""File names for stream names and meta keys, which may be any non-empty string.

``safe_name`` keeps ASCII letters, digits, ``-`` and ``_`` and writes every
other character as ``%XX`` per UTF-8 byte, so ``/``, ``.``, ``%`` and
non-printables never reach the file system; ``unsafe_name`` reverses it.

An escaped name can be up to 12 times longer than the name, past the 255
bytes a file name may have. ``file_name`` therefore shortens one longer
than ``MAX_FILE_NAME``: the start of the escaped form, ``~`` (which no
escaped form contains) and a SHA-1 of the name. Whoever makes such a file
keeps the name beside it (a sidecar file), since it cannot be read back
from the file name.
"""

from __future__ import annotations

import hashlib
import re

#: The longest file name made, leaving room for suffixes (".json.tmp") under 255.
MAX_FILE_NAME = 200
HASHED = "~"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_ESCAPED = re.compile(r"(?:%[0-9A-F]{2})+")


def safe_name(name: str) -> str:
    """The escaped form of ``name`` (reversible by ``unsafe_name``)."""
    return "".join(
        char if char in _SAFE else "".join("%%%02X" % byte for byte in char.encode("utf-8", "surrogatepass"))
        for char in name
    )


def unsafe_name(text: str) -> str:
    """The name that ``safe_name`` turned into ``text``."""
    return _ESCAPED.sub(lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode("utf-8", "surrogatepass"), text)


def file_name(name: str) -> str:
    """``safe_name(name)``, or its shortened, hashed form when that is too long."""
    escaped = safe_name(name)
    if len(escaped) <= MAX_FILE_NAME:
        return escaped
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()
    return escaped[: MAX_FILE_NAME - len(digest) - 1] + HASHED + digest


def is_hashed(file_name_: str) -> bool:
    """True for a shortened file name, whose name is in a sidecar file."""
    return HASHED in file_name_
