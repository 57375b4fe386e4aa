"""The auth and TLS settings turned into what the listeners use: one
twisted.cred portal for all of them (None when no user, token or certificate
is configured), and a ``ListenerTLS`` per TLS listener (the ``[tls]``
section's, or a listener's own certificate).

All are built once at start-up, before the reactor runs, so that a bad
setting stops FlowMQ with a message naming the key and the file.
"""

from __future__ import annotations

from flowmq.auth.permissions import Permissions
from flowmq.auth.realm import build_portal
from flowmq.config import ConfigError
from flowmq.tls import TLSConfigError, server_options

#: The user name a client logs in as with the single auth.token.
TOKEN_USER = "token"


class ListenerTLS:
    """How one listener speaks TLS: the Twisted options, TLS before the
    protocol's first frame or after it (``handshake_first``), whether client
    certificates are required, and how long a client has for its handshake."""

    def __init__(self, options, handshake_first: bool, verify_clients: bool, timeout: float):
        self.options = options
        self.handshake_first = handshake_first
        self.verify_clients = verify_clients
        self.timeout = timeout

    def describe(self) -> str:
        """For the start-up log."""
        text = "TLS handshake first" if self.handshake_first else "TLS required"
        if self.verify_clients:
            text += ", client certificates required"
        return text


def listener_tls(names: str, cert, key, ca, verify: bool, handshake_first: bool, timeout: float,
                 source: str) -> ListenerTLS:
    """A listener's TLS from its settings; ``names`` prefixes the setting
    names in errors ("tls." or "nats.listeners entry 2: ")."""
    if cert is None or key is None:
        raise ConfigError("%s: %scert and %skey go together" % (source, names, names))
    try:
        options = server_options(cert, key, ca, verify, names=names)
    except TLSConfigError as e:
        raise ConfigError("%s: %s" % (source, e)) from None
    return ListenerTLS(options, handshake_first, verify, timeout)


class Security:
    """The portal and the default TLS (``[tls]``) of one broker, from its settings."""

    def __init__(self, settings):
        auth = settings.auth
        self.auth_timeout = auth.timeout
        self.portal = build_portal(*_auth_tables(auth, _source(settings)))
        #: Clients may log in with a TLS client certificate (auth.certificates).
        self.certificate_logins = bool(auth.certificates)
        self.source = _source(settings)
        tls = settings.tls
        self.tls_timeout = tls.timeout
        #: The [tls] section's TLS, None when tls.cert is not set.
        self.tls = None
        if tls.cert is not None or tls.key is not None:
            self.tls = listener_tls("tls.", tls.cert, tls.key, tls.ca, tls.verify, tls.handshake_first,
                                    tls.timeout, self.source)
            if self.certificate_logins and tls.ca is None:
                raise ConfigError("%s: auth.certificates needs tls.ca (client certificates are only "
                                  "asked for when tls.ca is set)" % self.source)
        elif tls.verify or tls.handshake_first or tls.ca is not None or self.certificate_logins:
            raise ConfigError("%s: tls.ca, tls.verify, tls.handshake_first and auth.certificates "
                              "need tls.cert and tls.key" % self.source)
        #: The TLS of each entry of each protocol's ``<section>.listeners``, by section.
        self.listeners = {
            section: [self._entry_tls(section, number, entry) for number, entry in enumerate(own.listeners, 1)]
            for section, own in vars(settings).items() if hasattr(own, "listeners")
        }

    def _entry_tls(self, section: str, number: int, entry: dict):
        """The TLS of entry ``number`` of ``<section>.listeners`` (its own
        certificate, the [tls] section's, or None for plain text)."""
        names = "%s.listeners[%d]." % (section, number)
        if entry["cert"] is not None or entry["key"] is not None:
            return listener_tls(names, entry["cert"], entry["key"], entry["ca"], entry["verify"],
                                entry["handshake_first"], self.tls_timeout, self.source)
        if not entry["tls"]:
            return None
        if self.tls is None:
            raise ConfigError("%s: %stls needs tls.cert and tls.key, or the entry's own cert and key"
                              % (self.source, names))
        return self.tls


def _source(settings):
    return settings.source or "the command line"


def _auth_tables(auth, source):
    """(users, tokens, certificates, permissions by user) for build_portal."""
    users = {}
    permissions = {}
    for entry in auth.users:
        if entry["password"] is not None:
            users[entry["name"]] = entry["password"]
        (publish_allow, publish_deny), (subscribe_allow, subscribe_deny) = entry["publish"], entry["subscribe"]
        permissions[entry["name"]] = Permissions(
            publish_allow=publish_allow, publish_deny=publish_deny,
            subscribe_allow=subscribe_allow, subscribe_deny=subscribe_deny,
            allow_responses=entry["allow_responses"],
        )
    if auth.user is not None:
        if auth.password is None:
            raise ConfigError("%s: auth.user %r needs auth.password" % (source, auth.user))
        users[auth.user] = auth.password
    tokens = {entry["token"]: entry["user"] for entry in auth.tokens}
    if auth.token is not None:
        tokens[auth.token] = TOKEN_USER
    certificates = {}
    for entry in auth.certificates:
        key = entry.get("subject") or entry.get("cn")
        if not key:
            raise ConfigError("%s: auth.certificates: the entry for user %r needs subject or cn"
                              % (source, entry["user"]))
        certificates[key] = entry["user"]
    return users, tokens, certificates, permissions
