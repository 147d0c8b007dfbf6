"""Short-lived stream tokens: what a browser, whose EventSource and WebSocket cannot send
an ``X-API-Key`` header, puts in the URL instead (``?token=``).

A token names its key by fingerprint and says when it expires, signed with HMAC-SHA256
under ``TOKEN_SECRET``: ``cpt_<12 hex of the fingerprint>_<unix expiry>_<43 base64url
characters of signature>``. Nothing is stored; a token is as good as its key, so a
revoked key's tokens stop with it (the key is looked up at each use).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

PREFIX = "cpt_"
TOKEN_PATTERN = re.compile(r"cpt_([0-9a-f]{12})_([0-9]{10})_([A-Za-z0-9_-]{43})")
KEY_FINGERPRINT_PREFIX = "key-"


class BadToken(ValueError):
    """Not a token this service signed (malformed, or its signature does not match)."""


@dataclass(frozen=True, slots=True)
class TokenClaim:
    fingerprint: str  # of the key it stands for
    expires_at: int  # unix seconds


class TokenSigner:
    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def _signature(self, fingerprint_hex: str, expires_at: int) -> str:
        mac = hmac.new(self._secret, f"{fingerprint_hex}_{expires_at}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def issue(self, fingerprint: str, expires_at: int) -> str:
        hex_part = fingerprint.removeprefix(KEY_FINGERPRINT_PREFIX)
        return f"{PREFIX}{hex_part}_{expires_at}_{self._signature(hex_part, expires_at)}"

    def read(self, token: str) -> TokenClaim:
        """The key and expiry a token signed here names (expired or not); BadToken else."""
        matched = TOKEN_PATTERN.fullmatch(token)
        if matched is None:
            raise BadToken("not a token")
        hex_part, expires, signature = matched.groups()
        if not hmac.compare_digest(signature, self._signature(hex_part, int(expires))):
            raise BadToken("signature does not match")
        return TokenClaim(KEY_FINGERPRINT_PREFIX + hex_part, int(expires))
