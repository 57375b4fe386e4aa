"""Secrets already verified against a bcrypt hash, so that bcrypt runs once
per user (or hashed token) and process, not once per login.

What is kept is an HMAC, under a key made at random when the process starts,
of the slot (the user name, or the stored hash of a token), the stored hash
and the secret: never the secret, and nothing another process could use. As
the stored hash is in it, an entry never vouches for a changed hash. Each
slot keeps the last secret that matched, so the memo holds at most one entry
per configured user or hashed token.
"""

from __future__ import annotations

import hmac
import secrets

_KEY = secrets.token_bytes(32)


def _digest(slot: str, stored: str, secret: str) -> bytes:
    mac = hmac.new(_KEY, digestmod="sha256")
    for part in (slot, stored, secret):
        data = part.encode("utf-8", "surrogatepass")
        mac.update(len(data).to_bytes(4, "big"))  # so that no two triples run together alike
        mac.update(data)
    return mac.digest()


class VerifiedSecrets:
    """The secrets that matched, one per slot."""

    def __init__(self):
        self._digests: dict = {}  # slot -> _digest of the last secret that matched

    def vouches(self, slot: str, stored: str, secret: str) -> bool:
        """Has ``secret`` already matched ``stored`` for ``slot``? (constant time)"""
        remembered = self._digests.get(slot)
        return remembered is not None and hmac.compare_digest(remembered, _digest(slot, stored, secret))

    def remember(self, slot: str, stored: str, secret: str) -> None:
        """``secret`` matched ``stored``; ``slot`` must be a configured one."""
        self._digests[slot] = _digest(slot, stored, secret)
