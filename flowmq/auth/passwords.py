"""Stored passwords and tokens: bcrypt hashes or plain text, as in nats-server.

A stored value that starts with ``$2a$``, ``$2b$`` or ``$2y$`` is a bcrypt
hash (nats-server, too, tells hashes from plain text by the bcrypt prefix;
``nats server passwd`` writes ``$2a$``); anything else is the secret itself.

``python -m flowmq.auth.passwords`` reads a password (asked twice on a
terminal, else the first line of standard input) and prints its hash, for
the configuration file, like ``nats server passwd``.
"""

from __future__ import annotations

import getpass
import hmac
import re
import sys

import bcrypt

#: bcrypt cost of new hashes (nats-server's ``nats server passwd`` uses 11).
COST = 11
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
#: bcrypt uses only the first 72 bytes of a password.
MAX_BCRYPT_BYTES = 72
#: A whole bcrypt hash: prefix, two-digit cost, 22 characters of salt and 31
#: of hash. Checked before the bcrypt package sees it: some of its versions
#: panic (an exception that is no Exception) on a short one.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}\Z")


def is_hashed(stored) -> bool:
    """Is ``stored`` a bcrypt hash (rather than a plain-text secret)?"""
    return isinstance(stored, str) and stored.startswith(BCRYPT_PREFIXES)


def hash_password(password: str) -> str:
    """A new bcrypt hash (``$2b$11$...``) of ``password``.

    Raises ValueError for a password of more than 72 UTF-8 bytes, which bcrypt
    could not tell from its first 72 (Go's bcrypt, which nats uses, refuses
    them too).
    """
    secret = password.encode("utf-8")
    if len(secret) > MAX_BCRYPT_BYTES:
        raise ValueError("password is longer than %d bytes, which bcrypt cannot hash" % MAX_BCRYPT_BYTES)
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=COST)).decode("ascii")


def verify_password(stored: str, password: str) -> bool:
    """Does ``password`` match ``stored``, a bcrypt hash or a plain-text secret?

    Plain text is compared in constant time (for equal lengths). A malformed
    hash matches nothing.
    """
    secret = password.encode("utf-8")
    if is_hashed(stored):
        if not _BCRYPT_HASH.match(stored):
            return False
        # Like Go's bcrypt.CompareHashAndPassword (nats-server), only the
        # first 72 bytes count; the bcrypt package would raise instead.
        try:
            return bcrypt.checkpw(secret[:MAX_BCRYPT_BYTES], stored.encode("ascii"))
        except ValueError:
            return False
    return hmac.compare_digest(stored.encode("utf-8"), secret)


def bcrypt_cost(stored: str) -> int:
    """The cost of a bcrypt hash (``$2b$11$...`` -> 11), or COST when it has none."""
    try:
        return int(stored.split("$")[2])
    except (IndexError, ValueError):
        return COST


def _read_password(stdin=None) -> str:
    stdin = sys.stdin if stdin is None else stdin
    if stdin.isatty():
        password = getpass.getpass("Enter password: ")
        if getpass.getpass("Reenter password: ") != password:
            raise ValueError("the passwords do not match")
    else:
        password = stdin.readline()
        if password.endswith("\n"):
            password = password[:-1]
        if password.endswith("\r"):
            password = password[:-1]
    if not password:
        raise ValueError("empty password")
    return password


def main() -> int:
    try:
        print(hash_password(_read_password()))
    except (ValueError, EOFError) as error:
        print("flowmq.auth.passwords: %s" % (error,), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
