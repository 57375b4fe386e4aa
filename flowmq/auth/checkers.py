"""twisted.cred credential checkers: user name and password, token, client certificate.

Each ``requestAvatarId`` returns a Deferred that fires with the user name
(a str) or fails with ``UnauthorizedLogin``. Plain-text secrets are checked
at once, in the reactor thread. bcrypt checks are CPU heavy: they wait in
``HASH_CHECKS``, a fair queue in front of the reactor's thread pool with a
line per client address (``flowmq.auth.fairqueue``; injectable for tests),
and a secret that matched once is remembered (``flowmq.auth.memo``), so a
user's next logins with it need no bcrypt at all.
"""

from __future__ import annotations

import hmac
import secrets
from collections import Counter

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import implementer

from flowmq.auth.credentials import ICertificateCredentials, ITokenCredentials, client_host
from flowmq.auth.fairqueue import FairQueue, QueueFull, source_of
from flowmq.auth.memo import VerifiedSecrets
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
    """A check that could not wait, or raised, is a refused login (the latter
    logged); a cancelled one (its client went away) stays cancelled."""
    if failure.check(UnauthorizedLogin, defer.CancelledError):
        return failure
    if failure.check(QueueFull):
        raise UnauthorizedLogin(failure.getErrorMessage())
    _log.failure("Credentials check failed", failure)
    raise UnauthorizedLogin("authorization violation")


#: The line bcrypt checks wait in: two run at a time in the reactor's thread
#: pool (so the reactor keeps a core on a 2-core machine), the client
#: addresses taking turns; at most 8 wait per address and 64 in all (about
#: 5 s of cost-11 hashing, more than auth.timeout lets a client wait), and a
#: login beyond that is refused at once. A waiting check whose login is
#: cancelled (its client went away or timed out) is dropped.
HASH_CHECKS = FairQueue(at_once=2, per_source=8, total=64)


@implementer(ICredentialsChecker)
class PasswordChecker:
    """User names and passwords; ``users`` maps names to stored passwords
    (bcrypt hashes or plain text, see ``flowmq.auth.passwords``).

    Timing: a wrong password of a plain-text user and an unknown user name
    are refused after a check against a dummy hash of the cost most users'
    hashes have (when some are hashed), in the same fair queue as a wrong
    bcrypt password: a refusal does not tell whether the name exists or how
    its password is stored. Only a right password is answered at once
    (plain text, or a bcrypt one already verified), which tells nothing to
    whoever does not know it.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict, hash_checks=None, verify=verify_password):
        self._users = dict(users)
        self._hash_checks = hash_checks or HASH_CHECKS
        self._verify = verify
        self._verified = VerifiedSecrets()
        costs = Counter(bcrypt_cost(s) for s in self._users.values() if is_hashed(s))
        if costs:
            self._dummy = _dummy_hash(costs.most_common(1)[0][0])
        else:
            self._dummy = secrets.token_urlsafe(24)

    def requestAvatarId(self, credentials):
        name = _text(credentials.username)
        password = _text(credentials.password)
        if name is None or password is None:
            return _refused()
        source = source_of(client_host(credentials))
        stored = self._users.get(name)
        if stored is None:
            checking = self._refusal(source, password)
        elif not is_hashed(stored):
            checking = self._check(source, stored, password)
            checking.addCallback(lambda matched: matched or self._refusal(source, password))
        elif self._verified.vouches(name, stored, password):
            return defer.succeed(name)
        else:
            checking = self._check(source, stored, password)
            checking.addCallback(self._remember, name, stored, password)

        def decide(matched):
            if matched:
                return name
            raise UnauthorizedLogin("authorization violation")

        return checking.addCallbacks(decide, _unexpected)

    def _check(self, source: str, stored: str, password: str):
        """Does ``password`` match ``stored``? bcrypt in the fair queue, plain text at once."""
        if is_hashed(stored):
            return self._hash_checks.submit(source, self._verify, stored, password)
        return defer.maybeDeferred(self._verify, stored, password)

    def _refusal(self, source: str, password: str):
        """False, after the work a wrong password for a hashed user costs."""
        return self._check(source, self._dummy, password).addCallback(lambda _: False)

    def _remember(self, matched, name, stored, password):
        if matched:
            self._verified.remember(name, stored, password)
        return matched


@implementer(ICredentialsChecker)
class TokenChecker:
    """Bare tokens; ``tokens`` maps each token (or its bcrypt hash) to a user
    name. Plain tokens are all compared at once; a token that matches none of
    them is checked against the hashed ones (those it matched before first,
    from the memo, else with bcrypt in the fair queue)."""

    credentialInterfaces = (ITokenCredentials,)

    def __init__(self, tokens: dict, hash_checks=None, verify=verify_password):
        self._plain = [(token.encode("utf-8"), user) for token, user in tokens.items() if not is_hashed(token)]
        self._hashed = [(token, user) for token, user in tokens.items() if is_hashed(token)]
        self._hash_checks = hash_checks or HASH_CHECKS
        self._verify = verify
        self._verified = VerifiedSecrets()  # slot: the stored hash

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
        for stored, name in self._hashed:
            if self._verified.vouches(stored, stored, token):
                return defer.succeed(name)
        checking = self._hash_checks.submit(source_of(client_host(credentials)), self._match_hashed, token)
        return checking.addCallbacks(self._decide, _unexpected, callbackArgs=(token,))

    def _match_hashed(self, token: str):
        """(stored hash, user) of the hashed token that ``token`` matches, or None.
        Stops at the first match: its timing tells only someone who holds
        a valid token where that token is in the list."""
        for stored, name in self._hashed:
            if self._verify(stored, token):
                return stored, name
        return None

    def _decide(self, match, token):
        if match is None:
            raise UnauthorizedLogin("authorization violation")
        stored, user = match
        self._verified.remember(stored, stored, token)
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
