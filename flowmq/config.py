"""FlowMQ's settings: every default in one place, and the one loader that the
command line, the TOML config file and etc/flowmq.tac all go through.

A config file is TOML with one table per section::

    [broker]
    data_dir = "/var/lib/flowmq"

    [limits]
    max_payload = 1048576

    [nats]
    port = 4222

``[limits]`` holds the per-connection limits every protocol shares; a
protocol's section may override one of them for that protocol (its default is
then ``limits.<key>``, and ``settings.<section>.<key>`` always holds the value
in force). Each protocol section has ``enabled``, ``host``, ``port`` (its
first listener, with ``[tls]`` when ``tls.cert`` is set) and ``listeners``
(more ports, each plain or TLS with ``[tls]``'s or its own certificate).

Each setting is also a command-line option named ``--<section>-<key>`` with
underscores as dashes (``--nats-max-payload``); the command line overrides the
file, and the file overrides the defaults. Errors name the key and the file.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from urllib.parse import urlsplit

from flowmq.core.topics import InvalidTopic, validate_filter

if sys.version_info >= (3, 11):
    import tomllib
else:  # PyPy 3.9
    import tomli as tomllib


class ConfigError(Exception):
    """A setting that cannot be used; the message names the key and its source."""


def _integer(text):
    if isinstance(text, (bool, float)) or not str(text).strip().lstrip("-").isdigit():
        raise ValueError("must be a whole number")
    return int(text)


def _positive_int(text):
    value = _integer(text)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


#: Byte-size units, as nats-server's config reads them: k, m, g, t are
#: powers of 1000; kb, mb ... (and kib, mib ...) powers of 1024.
_UNITS = {"": 1, "b": 1}
_UNITS.update((letter, 1000 ** power) for power, letter in enumerate("kmgt", 1))
_UNITS.update((letter + suffix, 1024 ** power) for power, letter in enumerate("kmgt", 1) for suffix in ("b", "i", "ib"))


def _byte_size(text):
    """A number of bytes: a whole number, or a string with a unit ("512MiB",
    "2GB", "10G"); -1 means no limit."""
    if isinstance(text, str):
        stripped = text.strip().lower()
        number = stripped.rstrip("kmgtib")
        unit = _UNITS.get(stripped[len(number):].strip())
        if unit is None:
            raise ValueError("must be a number of bytes, with an optional unit (K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB)")
        value = _integer(number.strip()) * unit
    else:
        value = _integer(text)
    if not -1 <= value < 2 ** 63:
        raise ValueError("must be -1 (no limit), 0 or more (below 2^63)")
    return value


def _port(text):
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535 (0 picks a free port)")
    return value


def _integer_0_65535(text):
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _positive_float(text):
    try:
        if isinstance(text, bool):
            raise ValueError
        value = float(text)
    except ValueError:
        raise ValueError("must be a number") from None
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _boolean(text):
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _string(text):
    if not isinstance(text, str):
        raise ValueError("must be a string")
    return text


def _secret(text):
    if not isinstance(text, str) or not text:
        raise ValueError("must be a non-empty string")
    return text


def _filter_list(value, where):
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("%s must be a list of topic filters" % where)
    for item in value:
        try:
            validate_filter(item)
        except InvalidTopic as e:
            raise ValueError("%s: %s" % (where, e)) from None
    return tuple(value)


def _permission(value, where):
    """A list of allowed filters, or a table {allow = [...], deny = [...]} -> (allow or None, deny)."""
    if isinstance(value, list):
        return _filter_list(value, where), ()
    if not isinstance(value, dict) or set(value) - {"allow", "deny"}:
        raise ValueError("%s must be a list of filters or a table with allow and deny lists" % where)
    allow = _filter_list(value["allow"], where + ".allow") if "allow" in value else None
    return allow, _filter_list(value.get("deny", []), where + ".deny")


def _tables(keys, required, convert=None):
    """A list of TOML tables with the given keys (``required`` ones must be there)."""
    def parse(value):
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise ValueError("must be a list of tables ([[...]] entries)")
        entries = []
        for number, entry in enumerate(value, 1):
            where = "entry %d" % number
            unknown = set(entry) - set(keys)
            if unknown:
                raise ValueError("%s: unknown key %s (known: %s)" % (where, ", ".join(sorted(unknown)), ", ".join(keys)))
            missing = [key for key in required if key not in entry]
            if missing:
                raise ValueError("%s: missing %s" % (where, ", ".join(missing)))
            entries.append(convert(entry, where) if convert else dict(entry))
        return tuple(entries)
    return parse


def _user(entry, where):
    for key in ("name", "password"):
        if key in entry and not (isinstance(entry[key], str) and entry[key]):
            raise ValueError("%s: %s must be a non-empty string" % (where, key))
    return {
        "name": entry["name"],
        "password": entry.get("password"),
        "publish": _permission(entry["publish"], where + ".publish") if "publish" in entry else (None, ()),
        "subscribe": _permission(entry["subscribe"], where + ".subscribe") if "subscribe" in entry else (None, ()),
        "allow_responses": _boolean(entry.get("allow_responses", False)),
    }


def _string_table(entry, where):
    for key, value in entry.items():
        if not isinstance(value, str):
            raise ValueError("%s: %s must be a string" % (where, key))
    return dict(entry)


#: The keys of an entry of ``<protocol>.listeners``.
LISTENER_KEYS = ("host", "port", "tls", "cert", "key", "ca", "verify", "handshake_first")


def _listener(entry, where):
    """One more listener of a protocol: port, host (default: the section's
    host), and TLS: ``tls = true`` for the [tls] section's certificate, or
    its own ``cert`` and ``key`` (with ``ca``, ``verify``, ``handshake_first``)."""
    try:
        listener = {"port": _port(entry["port"])}
        listener["host"] = _string(entry["host"]) if "host" in entry else None
        for key in ("cert", "key", "ca"):
            listener[key] = _string(entry[key]) if key in entry else None
        for key in ("tls", "verify", "handshake_first"):
            listener[key] = _boolean(entry.get(key, False))
    except ValueError as e:
        raise ValueError("%s: %s" % (where, e)) from None
    own = listener["cert"] is not None or listener["key"] is not None
    if not own and (listener["ca"] is not None or listener["verify"] or listener["handshake_first"]):
        raise ValueError("%s: ca, verify and handshake_first go with the entry's own cert and key "
                         "(with tls = true, the [tls] section's apply)" % where)
    listener["tls"] = listener["tls"] or own
    return listener


def _listener_url(text, where):
    """``tcp://HOST:PORT`` (plain) or ``tls://HOST:PORT`` (the [tls] section's TLS)."""
    try:
        url = urlsplit(text.strip())
        port = url.port
    except ValueError as e:
        raise ValueError("%s: %s" % (where, e)) from None
    if url.scheme not in ("tcp", "tls") or port is None or url.path or url.query:
        raise ValueError("%s: %r is not tcp://HOST:PORT or tls://HOST:PORT" % (where, text))
    return _listener({"host": url.hostname or "", "port": port, "tls": url.scheme == "tls"}, where)


def _listeners(value):
    """A list of [[<protocol>.listeners]] tables, or (command line) a comma
    separated list of tcp://HOST:PORT and tls://HOST:PORT."""
    if isinstance(value, str):
        return tuple(_listener_url(text, "entry %d" % number)
                     for number, text in enumerate(value.split(","), 1) if text.strip())
    return _tables(LISTENER_KEYS, ("port",), _listener)(value)


def _choice(*choices):
    def parse(text):
        if text not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return text
    return parse


class Setting:
    """One setting: where it lives, how to read it, its default and its help.

    ``cli`` False: a structured setting (a list of tables) that only a
    config file can give. ``inherit``: the setting whose value this one takes
    when it is not given (a protocol's override of a ``[limits]`` key).
    """

    def __init__(self, section, key, parse, default, help, cli=True, inherit=None):
        self.section = section
        self.key = key
        self.parse = parse
        self.default = default
        self.help = help
        self.cli = cli
        self.inherit = inherit

    @property
    def name(self):
        return "%s.%s" % (self.section, self.key)

    @property
    def option(self):
        return ("%s-%s" % (self.section, self.key)).replace("_", "-")


#: The per-connection limits every protocol shares (section [limits]); a
#: protocol's section may override each of them for that protocol.
_LIMITS = (
    ("max_payload", _positive_int, 1048576, "largest message payload (headers included) in bytes"),
    ("max_connections", _positive_int, 65536, "most client connections at once, over all listeners of a protocol"),
    ("max_pending", _positive_int, 67108864,
     "bytes that may wait for one slow client before it is cut off as a slow consumer"),
    ("ping_interval", _positive_float, 120.0,
     "seconds between the server's keepalive PINGs (or the protocol's own keepalive frame)"),
    ("max_pings_out", _positive_int, 2, "unanswered PINGs after which a connection is closed as stale"),
    ("write_deadline", _positive_float, 10.0,
     "seconds a client's output may stay backed up without it catching up (then it is cut "
     "off as a slow consumer), and a closing connection gets to take its last bytes"),
    ("stall_deadline", _positive_float, 2.0,
     "seconds a client may take nothing at all while its output is backed up (then it is "
     "cut off as a slow consumer); after 0.5 s of that it no longer holds back publishers"),
)


def _protocol_settings(section, label, port, tls="TLS with [tls] when tls.cert is set"):
    """What every protocol's section has: enabled, host, port, listeners,
    and its overrides of the [limits] keys."""
    return (
        Setting(section, "enabled", _boolean, True, "serve the %s protocol" % label),
        Setting(section, "host", _string, "0.0.0.0", "address the %s listener binds to" % label),
        Setting(section, "port", _port, port, "%s port (0 picks a free port); %s" % (label, tls)),
        Setting(section, "listeners", _listeners, (),
                "more %s listeners: [[%s.listeners]] with port, host, and tls = true ([tls]'s certificate) "
                "or their own cert, key, ca, verify, handshake_first; on the command line "
                "tcp://HOST:PORT,tls://HOST:PORT" % (label, section)),
    ) + tuple(
        Setting(section, key, parse, None, "limits.%s for %s alone (when set)" % (key, label),
                inherit="limits." + key)
        for key, parse, _, _ in _LIMITS
    )


SETTINGS = (
    Setting("broker", "data_dir", _string, "flowmq-data",
            "directory for FlowMQ's data files (created if missing)"),
    Setting("broker", "server_name", _string, "flowmq",
            "name this server reports to clients"),
    Setting("broker", "log_level", _choice("debug", "info", "warn", "error"), "info",
            "least severe log events written: debug, info, warn or error"),
    Setting("broker", "route_cache_size", _positive_int, 4096,
            "number of topics whose routing result is cached"),
    Setting("broker", "max_topic_levels", _positive_int, 128,
            "most levels in a subscription's topic filter (a NATS token is one level, a trailing '>' two)"),
    *(Setting("limits", key, parse, default, help) for key, parse, default, help in _LIMITS),
    *_protocol_settings("nats", "NATS", 4222),
    Setting("nats", "max_control_line", _positive_int, 4096,
            "longest protocol line (PUB, SUB, CONNECT ...) in bytes"),
    Setting("nats", "max_subscriptions", _positive_int, 1000000,
            "most subscriptions on one connection"),
    *_protocol_settings("mqtt", "MQTT", 1883, "plain text (MQTT over TLS: mqtt.tls_port)"),
    Setting("mqtt", "tls_port", _port, 8883,
            "MQTT over TLS port (TLS from the first byte), listening only when tls.cert is set"),
    Setting("mqtt", "max_packet_size", _positive_int, 1048576 + 65536,
            "largest MQTT packet a client may send, in bytes (its payload also within max_payload)"),
    Setting("mqtt", "max_inflight", _positive_int, 20,
            "QoS 1 and 2 messages on their way to one client at once (a v5 client's Receive Maximum "
            "lowers it); the others wait in its queue"),
    Setting("mqtt", "max_queued", _positive_int, 1000,
            "QoS 1 and 2 messages that may wait for one client (in flight ones not counted): for an "
            "absent persistent session or a client at max_inflight; past half of it a connected client "
            "that acknowledges holds its publishers back, otherwise more are dropped"),
    Setting("mqtt", "max_subscriptions", _positive_int, 100000,
            "most subscriptions of one MQTT session; more are refused in the SUBACK (v5: 0x97)"),
    Setting("mqtt", "topic_alias_maximum", _integer_0_65535, 10,
            "topic aliases an MQTT 5 client may set up with the broker (0: none)"),
    Setting("mqtt", "max_keepalive", _integer_0_65535, 65535,
            "largest keep alive a client may have, in seconds: one asking for more (or, below 65535, "
            "for none) gets this one (an MQTT 5 client is told, as Server Keep Alive)"),
    Setting("auth", "user", _string, None, "user name of the single-user setup (with auth.password)"),
    Setting("auth", "password", _secret, None,
            "password of auth.user: plain text or a bcrypt hash (python -m flowmq.auth.passwords)"),
    Setting("auth", "token", _secret, None, "a token every client must present (plain text or bcrypt hash)"),
    Setting("auth", "timeout", _positive_float, 2.0,
            "seconds a client has to authenticate (send CONNECT) when auth is on"),
    Setting("auth", "users", _tables(("name", "password", "publish", "subscribe", "allow_responses"),
                                     ("name",), _user), (),
            "users: [[auth.users]] with name, password, and optional publish/subscribe "
            "permissions and allow_responses", cli=False),
    Setting("auth", "tokens", _tables(("token", "user"), ("token", "user"), _string_table), (),
            "tokens: [[auth.tokens]] with token and the user it logs in as", cli=False),
    Setting("auth", "certificates", _tables(("subject", "cn", "user"), ("user",), _string_table), (),
            "TLS client certificates: [[auth.certificates]] with subject (full DN) or cn, and user",
            cli=False),
    Setting("tls", "cert", _string, None, "server certificate (PEM, chain after it); turns TLS on"),
    Setting("tls", "key", _string, None, "private key of tls.cert (PEM)"),
    Setting("tls", "ca", _string, None, "CA certificates (PEM) that client certificates must be signed by"),
    Setting("tls", "verify", _boolean, False, "require a client certificate signed by tls.ca"),
    Setting("tls", "timeout", _positive_float, 2.0,
            "seconds a client has to complete its TLS handshake"),
    Setting("tls", "handshake_first", _boolean, False,
            "TLS handshake before INFO (nats-py's tls_handshake_first) instead of the upgrade after INFO"),
    Setting("storage", "fsync", _choice("always", "interval", "never"), "interval",
            "when stored messages are fsynced: always (before every acknowledgement), interval "
            "(every storage.fsync_interval_ms) or never (the OS decides); every acknowledged "
            "message is written to the OS first, so all three survive kill -9 of the broker"),
    Setting("storage", "fsync_interval_ms", _positive_int, 1000,
            "milliseconds between fsyncs when storage.fsync is interval"),
    Setting("storage", "segment_bytes", _positive_int, 64 * 1024 * 1024,
            "size at which a stream's log starts a new segment file"),
    Setting("storage", "compact_interval", _positive_float, 60.0,
            "seconds between sweeps that rewrite segment files a quarter or more of which is deleted messages"),
    Setting("jetstream", "enabled", _boolean, True, "serve the JetStream API ($JS.API.>) and its streams"),
    Setting("jetstream", "max_streams", _positive_int, 10000,
            "most streams the broker holds (file streams also at most half of the open-file limit, ulimit -n)"),
    Setting("jetstream", "max_consumers", _positive_int, 100000, "most consumers over all streams"),
    Setting("jetstream", "max_memory", _byte_size, None,
            "most bytes that all memory streams may hold together, e.g. 2GiB; -1: no limit, 0: no memory "
            "streams [default: 75% of the machine's memory, or 256MiB if that is unknown]"),
    Setting("jetstream", "max_store", _byte_size, None,
            "most bytes that all file streams may hold together, e.g. 500GB; -1: no limit, 0: no file "
            "streams [default: 75% of the disk space free for broker.data_dir at start-up, or 1TiB if "
            "that is unknown]"),
    Setting("jetstream", "max_ack_pending", _positive_int, 1000,
            "max_ack_pending of a consumer that does not set one"),
    Setting("jetstream", "max_waiting", _positive_int, 512,
            "max_waiting (pull requests queued) of a pull consumer that does not set one"),
)

SECTIONS = tuple(dict.fromkeys(setting.section for setting in SETTINGS))


def defaults() -> SimpleNamespace:
    """The embedded defaults, as ``settings.<section>.<key>``."""
    return load(None, {})


def load(path, overrides) -> SimpleNamespace:
    """Defaults, then the TOML file at ``path`` (if any), then ``overrides``.

    ``overrides`` maps setting names (``"nats.port"``) to raw values (strings
    from the command line, or already typed values).
    """
    values = {setting.name: setting.default for setting in SETTINGS}
    if path is not None:
        values.update(_read_file(path))
    for name, raw in overrides.items():
        values[name] = _parse(_setting_named(name, "the command line"), raw, "the command line")
    for setting in SETTINGS:
        if setting.inherit is not None and values[setting.name] is None:
            values[setting.name] = values[setting.inherit]
    settings = SimpleNamespace(**{section: SimpleNamespace() for section in SECTIONS})
    for name, value in values.items():
        section, key = name.split(".")
        setattr(getattr(settings, section), key, value)
    settings.source = path
    return settings


_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _setting_named(name, source):
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ConfigError("%s: unknown setting %r" % (source, name)) from None


def _parse(setting, raw, source):
    try:
        return setting.parse(raw)
    except (TypeError, ValueError) as e:
        shown = "" if isinstance(raw, (list, dict)) else " = %r" % (raw,)
        raise ConfigError("%s: %s%s is not valid: %s" % (source, setting.name, shown, e)) from None


def _read_file(path) -> dict:
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError("%s: cannot read config file: %s" % (path, e.strerror)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: not valid TOML: %s" % (path, e)) from None
    values = {}
    for section, table in document.items():
        if section not in SECTIONS:
            raise ConfigError("%s: unknown section [%s] (known: %s)" % (path, section, ", ".join(SECTIONS)))
        if not isinstance(table, dict):
            raise ConfigError("%s: %s must be a table ([%s])" % (path, section, section))
        for key, raw in table.items():
            setting = _setting_named("%s.%s" % (section, key), path)
            values[setting.name] = _parse(setting, raw, path)
    return values
