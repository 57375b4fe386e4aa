"""NATS <-> Message: what a NATS publish becomes in the core, and what a
NATS subscriber sees of a message that any protocol published.

NATS headers are ``Name: text`` lines; a Message has typed header values
and Properties (flowmq/core/message.py). docs/ARCHITECTURE.md ("The message") gives the
whole design; in short:

- Each property has a header (``PROPERTY_HEADERS``): ``message_id`` is
  ``Nats-Msg-Id`` (the id JetStream de-duplicates on), ``content_type`` and
  ``content_encoding`` are ``Content-Type`` and ``Content-Encoding``, the
  others ``FlowMQ-<Field>``. Numbers are decimal (times in ns since the
  epoch), booleans ``true``/``false``, bytes percent-encoded.
- *Plain* form: a message whose header values are all plain strings (what
  a NATS publisher can send) and whose properties are exactly those its
  property headers give (``properties_of``) is the block of its pairs as
  they are. Every NATS publish is in plain form: its headers are kept
  verbatim (JetStream reads its ``Nats-*`` headers from them) and its
  properties are derived from them.
- *Rendered* form, for everything else: header names and values that are
  not plain are escaped, every property gets its header line, and a last
  line ``FlowMQ-Types`` lists, per escaped or typed line, ``<line
  index><value code>[p][~]`` (``p``: the line is a property, ``~``: its name
  is percent-encoded). A plain-text reader sees sensible text (``3`` for an
  int, ``true``, the percent-encoded bytes); ``from_nats`` reverses it
  exactly. A block whose ``FlowMQ-Types`` line is not valid is read in
  plain form.

The user id is the one property a NATS publisher cannot simply set: it
must be the user it logged in as (RabbitMQ's rule for AMQP's user-id),
else the publish loses it (``without_user_id``).

Whatever a name or value holds, the block never gets a CR, LF or other
control character, nor a name with a colon, space or non-ASCII character:
those are percent-encoded.
"""

from __future__ import annotations

import base64
import re
from decimal import Decimal, InvalidOperation
from urllib.parse import quote, quote_from_bytes, unquote, unquote_to_bytes

from flowmq.core.message import PROPERTY_HEADERS, Properties
from flowmq.core.values import Timestamp, decode_value, encode_value
from flowmq.nats import codec

TYPES_HEADER = "FlowMQ-Types"
_TYPES_LOWER = TYPES_HEADER.lower()

_I64 = (-(1 << 63), (1 << 63) - 1)
#: Each property's value type: ``(type, (lowest, highest))`` for ints.
_KINDS = {
    "content_type": (str, None), "content_encoding": (str, None), "correlation": (bytes, None),
    "message_id": (str, None), "key": (bytes, None), "timestamp": (int, _I64), "expiry": (int, _I64),
    "priority": (int, (0, 255)), "qos": (int, (0, 2)), "type": (str, None), "user_id": (str, None),
    "app_id": (str, None), "utf8": (bool, None),
}
_FIELD_OF = {header.lower(): field for field, header in PROPERTY_HEADERS.items()}
_FIRST_LETTERS = frozenset(header[0] for header in _FIELD_OF) | frozenset(header[0].upper() for header in _FIELD_OF)

#: What may appear unescaped: printable ASCII; in names not ':' (nor space:
#: nats-py drops names with whitespace); '%' is the escape itself.
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
_VALUE_SAFE = _PRINTABLE.replace("%", "")
_NAME_SAFE = _VALUE_SAFE.replace(":", "")
_PLAIN_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but ':'
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INT = re.compile(r"-?[0-9]{1,19}")
_TOKEN = re.compile(r"([0-9]{1,6})([sbnitfdTFA]?)(p?)(~?)")
_MAX_DECIMAL = 1000  # characters of a Decimal's text


def _plain_value(value) -> bool:
    """A str that a NATS header line carries as it is."""
    return (type(value) is str and not _CONTROL.search(value) and value == value.strip()
            and (value.isascii() or _utf8(value)))


def _utf8(text: str) -> bool:
    """False for a str with a lone surrogate (no UTF-8 form)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _derive(kind, text: str):
    """The value a property header's text gives, when it is that value's own
    rendering, else None."""
    if kind is str:
        return text if _plain_value(text) else None
    if kind is int:
        if _INT.fullmatch(text) and str(int(text)) == text:
            return int(text)
        return None
    if kind is bool:
        return True if text == "true" else False if text == "false" else None
    value = unquote_to_bytes(text)
    return value if quote_from_bytes(value, safe=_VALUE_SAFE) == text else None


def _render_name(name: str):
    """``(text, escaped)`` of a header name."""
    if _PLAIN_NAME.fullmatch(name):
        return name, False
    return (quote(name, safe=_NAME_SAFE, encoding="utf-8", errors="surrogatepass") or "%"), True


def _render_value(value):
    """``(text, code)`` of a header value (code "" for a plain str)."""
    kind = type(value)
    if kind is str:
        if _plain_value(value):
            return value, ""
        return quote(value, safe=_VALUE_SAFE, encoding="utf-8", errors="surrogatepass"), "s"
    if kind is bytes:
        return quote_from_bytes(value, safe=_VALUE_SAFE), "b"
    if value is None:
        return "", "n"
    if kind is bool:
        return ("true" if value else "false"), "t"
    if kind is int:
        return str(value), "i"
    if kind is Timestamp:
        return str(int(value)), "T"
    if kind is float:
        return repr(value), "f"
    if kind is Decimal:
        return str(value), "d"
    if kind is dict or kind is tuple:
        return base64.b64encode(encode_value(value)).decode("ascii"), ("F" if kind is dict else "A")
    raise ValueError("%s is not a header value type" % kind.__name__)


def _parse_value(code: str, text: str):
    """The value of a rendered line; ValueError if ``text`` is not one."""
    if code == "":
        return text
    if code == "s":
        return unquote(text, encoding="utf-8", errors="surrogatepass")
    if code == "b":
        return unquote_to_bytes(text)
    if code == "n":
        if text:
            raise ValueError("a null header with a value")
        return None
    if code == "t":
        if text not in ("true", "false"):
            raise ValueError("not a boolean")
        return text == "true"
    if code == "i" or code == "T":
        if not _INT.fullmatch(text):
            raise ValueError("not a 64-bit integer")
        number = int(text)
        if not _I64[0] <= number <= _I64[1]:
            raise ValueError("not a 64-bit integer")
        return number if code == "i" else Timestamp(number)
    if code == "f":
        return float(text)
    if code == "d":
        if len(text) > _MAX_DECIMAL:
            raise ValueError("decimal too long")
        try:
            return Decimal(text)
        except InvalidOperation:
            raise ValueError("not a decimal") from None
    data = base64.b64decode(text, validate=True)  # "F" or "A"
    value, end = decode_value(data)
    if end != len(data) or type(value) is not (dict if code == "F" else tuple):
        raise ValueError("not a table or array")
    return value


def _fits(field: str, value) -> bool:
    kind, bounds = _KINDS[field]
    if type(value) is not kind:
        return False
    return bounds is None or bounds[0] <= value <= bounds[1]


def properties_of(headers):
    """The Properties that the property headers among ``headers`` (``(name,
    value)`` pairs) give, or None: the first str line of each property's
    header (names compared without case), when its text is that property's
    own rendering (``FlowMQ-Priority: 007`` is not; it stays a header only)."""
    properties = None
    for name, text in headers:
        if name[:1] not in _FIRST_LETTERS:  # most names: no lower() needed to tell
            continue
        field = _FIELD_OF.get(name.lower())
        if field is None or type(text) is not str or (properties is not None and getattr(properties, field) is not None):
            continue
        value = _derive(_KINDS[field][0], text)
        if value is None or not _fits(field, value):
            continue
        if properties is None:
            properties = Properties()
        setattr(properties, field, value)
    return properties


def from_nats(pairs):
    """``(headers, properties)`` of a NATS publish's header pairs (``codec.parse_headers``)."""
    if pairs and pairs[-1][0].lower() == _TYPES_LOWER:
        try:
            return _from_rendered(pairs)
        except ValueError:
            pass  # not one of ours after all: plain form
    return pairs, properties_of(pairs)


def _from_rendered(pairs):
    flags = {}
    lines = len(pairs) - 1
    for token in pairs[-1][1].split():
        match = _TOKEN.fullmatch(token)
        if match is None or int(match.group(1)) >= lines or int(match.group(1)) in flags:
            raise ValueError("bad %s token" % TYPES_HEADER)
        flags[int(match.group(1))] = match.groups()[1:]
    headers = []
    properties = None
    for index in range(lines):
        name, text = pairs[index]
        code, is_property, escaped = flags.get(index, ("", "", ""))
        if escaped:
            name = "" if name == "%" else unquote(name, encoding="utf-8", errors="surrogatepass")
        value = _parse_value(code, text)
        if not is_property:
            headers.append((name, value))
            continue
        field = _FIELD_OF.get(name.lower())
        if field is None or not _fits(field, value) or (properties is not None and getattr(properties, field) is not None):
            raise ValueError("bad property line %r" % name)
        if properties is None:
            properties = Properties()
        setattr(properties, field, value)
    # () rather than None when nothing is left, so that the message still
    # goes out as HMSG with the block it came with (as nats-server sends it).
    return (tuple(headers) or (None if properties is not None else ())), properties


def without_user_id(headers, properties):
    """``(headers, properties)`` of a NATS publish that may not claim the
    user id it carries: no user_id property, and no ``FlowMQ-User-Id``
    header line (so that the message stays in plain form, and no other
    protocol's reader takes the line for the user id either)."""
    lowered = PROPERTY_HEADERS["user_id"].lower()
    if headers:
        headers = tuple(pair for pair in headers if pair[0].lower() != lowered)
    kept = Properties(**dict(pair for pair in properties.items() if pair[0] != "user_id"))
    return headers, (kept if kept.items() else None)


def to_nats(headers, properties) -> tuple:
    """The ``(name, text)`` lines of a NATS header block for a message's
    headers and properties (plain form when it is in it, else rendered).
    Properties None stand for those the headers give: a message stored
    without its properties (a record written before version 2, say) is
    rendered in plain form, as it was published."""
    headers = headers or ()
    if (all(_plain_value(value) and _PLAIN_NAME.fullmatch(name) for name, value in headers)
            and not (headers and headers[-1][0].lower() == _TYPES_LOWER)
            and (properties is None or properties_of(headers) == properties)):
        return tuple(headers)
    lines, tokens = [], []
    for name, value in headers:
        name, escaped = _render_name(name)
        text, code = _render_value(value)
        if code or escaped:
            tokens.append("%d%s%s" % (len(lines), code, "~" if escaped else ""))
        lines.append((name, text))
    if properties is not None:
        for field, value in properties.items():
            text, code = _render_value(value)
            tokens.append("%d%sp" % (len(lines), code))
            lines.append((PROPERTY_HEADERS[field], text))
    lines.append((TYPES_HEADER, " ".join(tokens)))
    return tuple(lines)


def header_block(message) -> bytes:
    """The NATS header block of ``message`` (the wire cache's builder)."""
    return codec.encode_headers(to_nats(message.headers, message.properties))


def header_block_length(headers, properties) -> int:
    """The bytes of the NATS header block of these headers and properties
    (0 when there are neither), what nats-server counts of a message's
    headers: ``len(header_block(message))``, counted without building the
    block when it is in plain form (a NATS publish always is)."""
    if not headers and properties is None:
        return 0
    if headers and (properties is None or properties_of(headers) == properties):
        size = _plain_block_length(headers)
        if size is not None:
            return size
    return len(codec.encode_headers(to_nats(headers, properties)))


def message_block_length(message) -> int:
    """The bytes of the header block a NATS subscriber gets of ``message``
    (0 when it has none): the wire cache's block, built there once if it is
    not yet (so a delivery sizes what it sends and sends what it sized)."""
    if message.headers is None and message.properties is None:
        return 0
    return len(message.cached(codec.WIRE_CACHE_HEADERS, header_block))


#: NATS/1.0 CR LF ... CR LF, and per line ": " and CR LF.
_BLOCK_BYTES, _LINE_BYTES = len(codec.HEADER_VERSION) + 4, 4


def _plain_block_length(headers):
    """The length of the block of ``headers`` as they are (plain form), or
    None when they are not plain (a value or name to escape, a last
    ``FlowMQ-Types`` line)."""
    size = _BLOCK_BYTES
    for name, value in headers:
        if not (_plain_value(value) and _PLAIN_NAME.fullmatch(name)):
            return None
        size += len(name) + len(value) + _LINE_BYTES if value.isascii() else (
            len(name) + len(value.encode("utf-8")) + _LINE_BYTES)
    if headers[-1][0].lower() == _TYPES_LOWER:
        return None
    return size
