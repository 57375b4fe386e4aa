"""The twisted.cred realm: what a logged-in client is (its user and permissions),
and ``build_portal``, which puts checkers and realm together from the configuration."""

from __future__ import annotations

from twisted.cred.portal import IRealm, Portal
from zope.interface import Attribute, Interface, implementer

from flowmq.auth.checkers import CertificateChecker, PasswordChecker, TokenChecker
from flowmq.auth.permissions import UNRESTRICTED, Permissions


class IFlowMQSession(Interface):
    """The avatar of an authenticated client connection."""

    user = Attribute("The user name, a str.")
    permissions = Attribute("The Permissions this connection works under.")


@implementer(IFlowMQSession)
class Session:
    __slots__ = ("user", "permissions")

    def __init__(self, user: str, permissions: Permissions):
        self.user = user
        self.permissions = permissions

    def __repr__(self):
        return "<Session %r %r>" % (self.user, self.permissions)


def _logout() -> None:
    pass


class UnsupportedInterface(NotImplementedError):
    """twisted.cred's IRealm contract: a realm asked for interfaces it does not
    provide raises NotImplementedError (this is that error, named)."""


@implementer(IRealm)
class FlowMQRealm:
    """Makes a Session for each login; a user without permissions of its own
    gets ``default_permissions`` (nats-server's ``default_permissions``),
    unrestricted unless configured."""

    def __init__(self, permissions_by_user: dict, default_permissions: Permissions = UNRESTRICTED):
        self._permissions = dict(permissions_by_user)
        self._default = default_permissions

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IFlowMQSession not in interfaces:
            raise UnsupportedInterface("FlowMQRealm only provides IFlowMQSession")
        user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        permissions = self._permissions.get(user, self._default)
        # Each connection gets its own copy where permissions keep state
        # (the replies an allow_responses user may send).
        return IFlowMQSession, Session(user, permissions.for_session()), _logout


def build_portal(
    users: dict,
    tokens: dict,
    certificates: dict,
    permissions_by_user: dict,
    default_permissions: Permissions = UNRESTRICTED,
    hash_checks=None,
) -> Portal | None:
    """A Portal over the configured users (name -> stored password), tokens
    (token or its bcrypt hash -> user name) and certificates (subject DN or
    common name -> user name); None when none is configured: then no client
    has to authenticate. ``hash_checks`` is the queue of bcrypt checks (see
    ``flowmq.auth.checkers.HASH_CHECKS``)."""
    checkers = []
    if users:
        checkers.append(PasswordChecker(users, hash_checks=hash_checks))
    if tokens:
        checkers.append(TokenChecker(tokens, hash_checks=hash_checks))
    if certificates:
        checkers.append(CertificateChecker(certificates))
    if not checkers:
        return None
    return Portal(FlowMQRealm(permissions_by_user or {}, default_permissions), checkers)
