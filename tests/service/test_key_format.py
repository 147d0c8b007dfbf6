"""Managed keys' shape: random, prefixed, checksummed (a scanner can tell a leaked key
from noise), and only their hash and fingerprint ever kept."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from service.key_format import (
    ALPHABET,
    KEY_LENGTH,
    PREFIX,
    digest_of,
    fingerprint_of,
    fingerprint_of_digest,
    is_well_formed,
    new_key,
)


def test_a_new_key_is_prefixed_random_and_checksummed() -> None:
    keys = {new_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(PREFIX) and len(key) == KEY_LENGTH
        assert set(key[len(PREFIX) :]) <= set(ALPHABET)
        assert is_well_formed(key)


@given(st.integers(min_value=len(PREFIX), max_value=KEY_LENGTH - 1), st.sampled_from(ALPHABET))
def test_any_one_character_changed_fails_the_checksum(at: int, replacement: str) -> None:
    key = new_key()
    changed = key[:at] + replacement + key[at + 1 :]
    assert is_well_formed(changed) == (changed == key)


@given(st.text(max_size=60))
def test_any_text_is_judged_without_raising(text: str) -> None:
    assert is_well_formed(text) in (True, False)
    assert not is_well_formed(text) or text.startswith(PREFIX)


def test_what_is_kept_is_the_hash_and_a_short_fingerprint() -> None:
    key = new_key()
    assert digest_of(key) == hashlib.sha256(key.encode()).digest()
    assert fingerprint_of(key) == "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    assert fingerprint_of(key) == fingerprint_of_digest(digest_of(key))
    assert key[len(PREFIX) :][:8] not in fingerprint_of(key)
