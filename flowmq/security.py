"""The auth and TLS settings turned into what every listener shares: one
twisted.cred portal (None when no user, token or certificate is configured)
and one set of TLS options (None when tls.cert is not set).

Both are built once at start-up, before the reactor runs, so that a bad
setting stops FlowMQ with a message naming the key and the file.
"""

from __future__ import annotations

from flowmq.auth.permissions import Permissions
from flowmq.auth.realm import build_portal
from flowmq.config import ConfigError
from flowmq.tls import TLSConfigError, server_options

#: The user name a client logs in as with the single auth.token.
TOKEN_USER = "token"


class Security:
    """The portal and TLS options of one broker, from its settings."""

    def __init__(self, settings):
        auth = settings.auth
        self.auth_timeout = auth.timeout
        self.portal = build_portal(*_auth_tables(auth, _source(settings)))
        #: Clients may log in with a TLS client certificate (auth.certificates).
        self.certificate_logins = bool(auth.certificates)
        tls = settings.tls
        self.handshake_first = tls.handshake_first
        self.tls_timeout = tls.timeout
        self.verify_clients = tls.verify
        self.tls_options = None
        if tls.cert is not None or tls.key is not None:
            if tls.cert is None or tls.key is None:
                raise ConfigError("%s: tls.cert and tls.key go together" % _source(settings))
            try:
                self.tls_options = server_options(tls.cert, tls.key, tls.ca, tls.verify)
            except TLSConfigError as e:
                raise ConfigError("%s: %s" % (_source(settings), e)) from None
            if self.certificate_logins and tls.ca is None:
                raise ConfigError("%s: auth.certificates needs tls.ca (client certificates are only "
                                  "asked for when tls.ca is set)" % _source(settings))
        elif tls.verify or tls.handshake_first or tls.ca is not None or self.certificate_logins:
            raise ConfigError("%s: tls.ca, tls.verify, tls.handshake_first and auth.certificates "
                              "need tls.cert and tls.key" % _source(settings))


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
