"""What a managed API key looks like: ``cpk_``, 32 random base62 characters (190 bits)
and a 6-character base62 CRC32 of them, the shape GitHub gives its tokens so that secret
scanners can find a leaked one by its prefix and tell it from noise by its checksum.

Only a key's SHA-256 is ever stored or compared (a key this random needs no slow hash:
nobody can guess one to test against it), and only its fingerprint is ever shown.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib

PREFIX = "cpk_"
ALPHABET = string.digits + string.ascii_letters  # base62
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def new_key() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return PREFIX + body + _checksum(body)


def is_well_formed(key: str) -> bool:
    """Whether ``key`` has a managed key's shape and checksum (a scanner's test; the
    service looks keys up by their hash whatever their shape)."""
    if len(key) != KEY_LENGTH or not key.startswith(PREFIX):
        return False
    body, checksum = key[len(PREFIX) : -CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    return all(c in ALPHABET for c in body) and _checksum(body) == checksum


def digest_of(key: str | bytes) -> bytes:
    """What is stored and looked up: the key's SHA-256 (of its UTF-8 bytes)."""
    return hashlib.sha256(key if isinstance(key, bytes) else key.encode()).digest()


def fingerprint_of(key: str) -> str:
    """A short, non-reversible name for a key, safe for logs and metrics."""
    return fingerprint_of_digest(digest_of(key))


def fingerprint_of_digest(digest: bytes) -> str:
    return "key-" + digest.hex()[:12]
