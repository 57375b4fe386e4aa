"""twisted.cred credential checkers: user name and password, token, client certificate.

Each ``requestAvatarId`` returns a Deferred that fires with the user name
(a str) or fails with ``UnauthorizedLogin``. bcrypt checks are CPU heavy and
run in the reactor's thread pool (``deferToThread``, injectable for tests);
plain-text checks are answered at once.
"""

from __future__ import annotations

import hmac
import secrets
from collections import Counter

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, threads
from zope.interface import implementer

from flowmq.auth.credentials import ICertificateCredentials, ITokenCredentials
from flowmq.auth.passwords import COST, bcrypt_cost, is_hashed, verify_password
from flowmq.logs import logger

_log = logger("flowmq.auth")
_dummy_hashes: dict = {}  # bcrypt cost -> a hash of a random secret


def _dummy_hash(cost: int) -> str:
    """A bcrypt hash of the given cost that no password matches (made once per cost)."""
    if not 4 <= cost <= 31:
        cost = COST
    if cost not in _dummy_hashes:
        secret = secrets.token_bytes(32)
        _dummy_hashes[cost] = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost)).decode("ascii")
    return _dummy_hashes[cost]


def _text(value):
    """A credential field as str (Twisted passes bytes), or None when it is neither."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _refused(reason: str = "authorization violation"):
    return defer.fail(UnauthorizedLogin(reason))


def _unexpected(failure):
    """A check that raised is a refused login, and logged."""
    if not failure.check(UnauthorizedLogin):
        _log.failure("Credentials check failed", failure)
        raise UnauthorizedLogin("authorization violation")
    return failure


#: bcrypt checks that run at once in the reactor's thread pool; the others
#: wait in line, and a waiting check whose login is cancelled (its client
#: went away) is dropped, so a flood of bogus logins cannot queue minutes
#: of hashing in front of real users.
HASH_CHECKS_AT_ONCE = 2
_hash_checks = defer.DeferredSemaphore(HASH_CHECKS_AT_ONCE)


def _hash_checks_in_threads(function, *args):
    return _hash_checks.run(threads.deferToThread, function, *args)


@implementer(ICredentialsChecker)
class PasswordChecker:
    """User names and passwords; ``users`` maps names to stored passwords
    (bcrypt hashes or plain text, see ``flowmq.auth.passwords``)."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict, defer_to_thread=None, verify=verify_password):
        self._users = dict(users)
        self._defer_to_thread = defer_to_thread or _hash_checks_in_threads
        self._verify = verify
        # An unknown user name is checked against this, so that it takes as
        # long as a wrong password: a bcrypt hash of the cost most users have
        # when they are hashed, else plain text. When some passwords are
        # hashed, plain-text ones are also checked against it, so that their
        # quick answer does not tell their names apart.
        costs = Counter(bcrypt_cost(s) for s in self._users.values() if is_hashed(s))
        if costs:
            self._dummy = _dummy_hash(costs.most_common(1)[0][0])
        else:
            self._dummy = secrets.token_urlsafe(24)
        self._pad_plain = bool(costs)

    def requestAvatarId(self, credentials):
        name = _text(credentials.username)
        password = _text(credentials.password)
        if name is None or password is None:
            return _refused()
        stored = self._users.get(name)
        known = stored is not None

        def decide(matched):
            if matched and known:
                return name
            raise UnauthorizedLogin("authorization violation")

        checking = self._check(stored if known else self._dummy, password)
        return checking.addCallbacks(decide, _unexpected)

    def _check(self, stored: str, password: str):
        if is_hashed(stored):
            return self._defer_to_thread(self._verify, stored, password)
        if self._pad_plain:
            return self._defer_to_thread(self._padded_plain_check, stored, password)
        return defer.maybeDeferred(self._verify, stored, password)

    def _padded_plain_check(self, stored: str, password: str) -> bool:
        self._verify(self._dummy, password)
        return self._verify(stored, password)


@implementer(ICredentialsChecker)
class TokenChecker:
    """Bare tokens; ``tokens`` maps each token (or its bcrypt hash) to a user name."""

    credentialInterfaces = (ITokenCredentials,)

    def __init__(self, tokens: dict, defer_to_thread=None, verify=verify_password):
        self._plain = [(token.encode("utf-8"), user) for token, user in tokens.items() if not is_hashed(token)]
        self._hashed = [(token, user) for token, user in tokens.items() if is_hashed(token)]
        self._defer_to_thread = defer_to_thread or _hash_checks_in_threads
        self._verify = verify

    def requestAvatarId(self, credentials):
        token = _text(credentials.token)
        if not token:
            return _refused()
        given = token.encode("utf-8")
        user = None
        for candidate, name in self._plain:
            # Every token is compared, in constant time, whichever matches.
            if hmac.compare_digest(candidate, given) and user is None:
                user = name
        if user is not None:
            return defer.succeed(user)
        if not self._hashed:
            return _refused()
        return self._defer_to_thread(self._match_hashed, token).addCallbacks(self._decide, _unexpected)

    def _match_hashed(self, token: str):
        # Stops at the first match: its timing tells only someone who holds
        # a valid token where that token is in the list.
        for stored, name in self._hashed:
            if self._verify(stored, token):
                return name
        return None

    @staticmethod
    def _decide(user):
        if user is None:
            raise UnauthorizedLogin("authorization violation")
        return user


def _split_unescaped(text: str, separator: str) -> list:
    """Split at each ``separator`` that is not escaped with a backslash (RFC 4514)."""
    parts, part, escaped = [], [], False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(part))
            part = []
            continue
        part.append(char)
    parts.append("".join(part))
    return parts


def distinguished_name(text: str):
    """An RFC 4514 DN as a tuple of RDNs, comparable with others: attribute types
    in upper case, spaces around separators dropped, the attributes of a
    multi-valued RDN sorted. None when ``text`` is not a DN (no ``type=value``)."""
    rdns = []
    for rdn in _split_unescaped(text, ","):
        attributes = []
        for attribute in _split_unescaped(rdn, "+"):
            kind, equals, value = attribute.partition("=")
            kind = kind.strip()
            if not equals or not kind:
                return None
            value = value.lstrip(" ")
            while value.endswith(" ") and not value.endswith("\\ "):
                value = value[:-1]
            attributes.append(kind.upper() + "=" + value)
        rdns.append("+".join(sorted(attributes)))
    return tuple(rdns)


@implementer(ICredentialsChecker)
class CertificateChecker:
    """Verified client certificates; ``mapping`` maps a subject DN or a common
    name to a user name. As nats-server's ``verify_and_map`` does, the subject
    is matched first, with its RDNs in the same order, then in any order, and
    then the common name. A key with ``type=value`` in it is a DN, any other a
    common name."""

    credentialInterfaces = (ICertificateCredentials,)

    def __init__(self, mapping: dict):
        self._by_subject: dict = {}
        self._by_rdns: dict = {}
        self._by_common_name: dict = {}
        for key, user in mapping.items():
            dn = distinguished_name(key)
            if dn is None:
                self._by_common_name[key] = user
            else:
                self._by_subject[dn] = user
                self._by_rdns.setdefault(frozenset(dn), user)

    def requestAvatarId(self, credentials):
        user = None
        subject = _text(credentials.subject)
        dn = distinguished_name(subject) if subject else None
        if dn is not None:
            user = self._by_subject.get(dn)
            if user is None:
                user = self._by_rdns.get(frozenset(dn))
        if user is None and credentials.common_name:
            user = self._by_common_name.get(_text(credentials.common_name))
        if user is None:
            return _refused("no user for certificate %s" % (subject,))
        return defer.succeed(user)
