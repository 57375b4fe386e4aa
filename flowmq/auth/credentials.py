"""The kinds of credentials a client can present, beside user name and password.

A user name and password is Twisted's own ``UsernamePassword``
(``IUsernamePassword``). Added here: a bare token (nats-server's
``auth_token``, MQTT's password-only logins) and a verified TLS client
certificate (nats-server's ``verify_and_map``).

A protocol also tells the checkers where credentials come from
(``presented_by``): they queue bcrypt work per client address.
"""

from __future__ import annotations

from twisted.cred.credentials import ICredentials
from zope.interface import Attribute, implementer


class ITokenCredentials(ICredentials):
    """A secret token that stands for a user."""

    token = Attribute("The token, a str.")


class ICertificateCredentials(ICredentials):
    """The subject of a client certificate that TLS has already verified."""

    common_name = Attribute("The subject's common name (CN), a str ('' when it has none).")
    subject = Attribute("The whole subject DN as an RFC 4514 string, e.g. 'CN=alice,O=Acme'.")


@implementer(ITokenCredentials)
class TokenCredentials:
    def __init__(self, token: str):
        self.token = token

    def __repr__(self):
        return "<TokenCredentials (hidden)>"


@implementer(ICertificateCredentials)
class CertificateCredentials:
    def __init__(self, common_name: str, subject: str):
        self.common_name = common_name
        self.subject = subject

    def __repr__(self):
        return "<CertificateCredentials %r>" % (self.subject,)


def presented_by(credentials, peer):
    """``credentials``, noted as coming from ``peer`` (the transport's
    ``getPeer()``), whose host ``client_host`` gives the checkers."""
    credentials.client_host = getattr(peer, "host", "")
    return credentials


def client_host(credentials) -> str:
    """The host of the client that presented ``credentials`` ('' when not noted)."""
    return getattr(credentials, "client_host", "")
