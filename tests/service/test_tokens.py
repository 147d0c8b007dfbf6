"""Stream tokens: what this service signed reads back; anything else, a changed
character, another secret or any text at all, is BadToken and never another error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.tokens import BadToken, TokenClaim, TokenSigner

SECRET = "s" * 32
FINGERPRINT = "key-0123456789ab"


def test_a_token_reads_back_as_its_key_and_expiry() -> None:
    token = TokenSigner(SECRET).issue(FINGERPRINT, 1_800_000_000)
    assert token.startswith("cpt_0123456789ab_1800000000_")
    assert TokenSigner(SECRET).read(token) == TokenClaim(FINGERPRINT, 1_800_000_000)


def test_another_secrets_token_is_refused() -> None:
    token = TokenSigner("t" * 32).issue(FINGERPRINT, 1_800_000_000)
    with pytest.raises(BadToken):
        TokenSigner(SECRET).read(token)


@given(st.integers(min_value=0, max_value=70), st.characters(codec="ascii"))
def test_any_character_changed_is_refused(at: int, replacement: str) -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue(FINGERPRINT, 1_800_000_000)
    changed = token[:at] + replacement + token[at + 1 :]
    if changed == token:
        assert signer.read(changed) == TokenClaim(FINGERPRINT, 1_800_000_000)
    else:
        with pytest.raises(BadToken):
            signer.read(changed)


@given(st.text(max_size=120))
def test_any_text_is_a_bad_token_and_nothing_else(text: str) -> None:
    with pytest.raises(BadToken):
        TokenSigner(SECRET).read(text)
