"""Bearer tokens: generated with a prefix, stored only as SHA-256 (api.store.accounts looks a
token up by its digest and compares it in constant time)."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "hearth_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def display_prefix(token: str) -> str:
    return token[: len(TOKEN_PREFIX) + 6]
