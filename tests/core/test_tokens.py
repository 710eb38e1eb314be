from __future__ import annotations

import hashlib

from core.tokens import TOKEN_PREFIX, display_prefix, hash_token, new_token


def test_tokens_are_prefixed_random_and_long() -> None:
    a, b = new_token(), new_token()
    assert a.startswith(TOKEN_PREFIX) and b.startswith(TOKEN_PREFIX)
    assert a != b
    assert len(a) - len(TOKEN_PREFIX) >= 43  # 32 random bytes, url-safe base64


def test_hash_is_sha256_hex_and_never_the_token() -> None:
    token = new_token()
    digest = hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in digest and len(digest) == 64


def test_a_token_one_character_off_hashes_differently() -> None:
    token = new_token()
    assert hash_token(token + "x") != hash_token(token) != hash_token(token[:-1])


def test_display_prefix_does_not_reveal_the_secret() -> None:
    token = new_token()
    assert display_prefix(token) == token[: len(TOKEN_PREFIX) + 6]
