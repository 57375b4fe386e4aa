"""What JetStream's JSON and headers look like on the wire.

Durations are integers of nanoseconds, times are RFC 3339 in UTC with
nanoseconds (nats-server's Go time format), stored headers go out as a NATS
header block (base64 in JSON), and status messages (heartbeats, pull
results) are header-only messages with a status line.
"""

from __future__ import annotations

import base64
import datetime
import json
import re

from flowmq.core.message import Message
from flowmq.nats import codec

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
#: Go's zero time, which nats-server writes for "never".
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ns: int) -> str:
    """``2026-11-30T05:33:03.123456789Z`` for ns since the epoch (0 -> Go's zero time)."""
    if not ns:
        return ZERO_TIME
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return "%s.%09dZ" % (stamp.strftime("%Y-%m-%dT%H:%M:%S"), fraction)


def parse_rfc3339(text: str) -> int:
    """ns since the epoch of an RFC 3339 time (any fraction length, Z or an offset)."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    fraction = 0
    if "." in text:
        head, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction = int(rest[:digits][:9].ljust(9, "0")) if digits else 0
        text = head + rest[digits:]
    stamp = datetime.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    delta = stamp - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + fraction


def go_duration(ns: int) -> str:
    """A duration as Go's time.Duration prints it (``1h2m3.5s``, ``250ms``),
    which nats-server's error texts use."""
    if ns < 1000:
        return "%dns" % ns if ns else "0s"
    if ns < 1_000_000:
        return _decimal(ns, 1000) + "\u00b5s"
    if ns < 1_000_000_000:
        return _decimal(ns, 1_000_000) + "ms"
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    seconds = _decimal(rest, 1_000_000_000) + "s"
    if hours:
        return "%dh%dm%s" % (hours, minutes, seconds)
    return "%dm%s" % (minutes, seconds) if minutes else seconds


#: The units of Go's time.ParseDuration, in ns.
_GO_UNITS = {"ns": 1, "us": 1000, "\u00b5s": 1000, "\u03bcs": 1000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}
#: One term of a Go duration: digits, an optional fraction, the unit.
_GO_TERM = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_GO_LIMIT = 1 << 63


def parse_go_duration(text: str) -> int:
    """ns of a duration as Go's time.ParseDuration reads it (``1h30m``,
    ``-1.5s``, ``250ms``, ``0``); ValueError for any other text and for a
    duration beyond Go's int64 nanoseconds. Digits of a fraction past the
    18th are ignored (below a nanosecond for every unit but the hour)."""
    negative = text.startswith("-")
    if text.startswith(("-", "+")):
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError("empty duration")
    total = position = 0
    while position < len(text):
        term = _GO_TERM.match(text, position)
        whole, fraction, unit = term.groups()
        if not (whole or fraction) or unit not in _GO_UNITS:
            raise ValueError("invalid duration %r" % text)
        whole, fraction, scale = whole.lstrip("0"), (fraction or "")[:18], _GO_UNITS[unit]
        if len(whole) > 19:  # beyond 2**63 whatever the unit (int() of long digit runs is slow)
            raise ValueError("duration %r does not fit int64" % text)
        total += int(whole or "0") * scale + (int(fraction) * scale // 10 ** len(fraction) if fraction else 0)
        if total > _GO_LIMIT:
            raise ValueError("duration %r does not fit int64" % text)
        position = term.end()
    if not negative and total == _GO_LIMIT:
        raise ValueError("duration %r does not fit int64" % text)
    return -total if negative else total


def _decimal(value: int, unit: int) -> str:
    """``value / unit`` in decimal, without trailing zeros (unit: a power of ten)."""
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    return "%d.%s" % (whole, str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0"))


def dumps(document) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def status_message(topic: str, status: bytes, description: bytes, headers=(), reply_to=None) -> Message:
    """A header-only status message (``NATS/1.0 100 Idle Heartbeat`` ...) for
    delivery on ``topic``."""
    message = Message(topic, b"", (), reply_to)
    message.wire_cache = {codec.WIRE_CACHE_HEADERS: codec.encode_headers(headers, status=status, description=description)}
    return message
