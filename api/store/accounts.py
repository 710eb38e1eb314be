"""Users and bearer tokens. Tokens are stored as SHA-256 only; the plain token is shown once."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

import psycopg

from core.tokens import display_prefix, hash_token, new_token


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    token_id: int | None = None  # the token this request came with (rate limits, request log)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    prefix: str
    user: str
    description: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


def ensure_user(conn: psycopg.Connection, name: str, role: str = "user") -> User:
    row = conn.execute(
        "INSERT INTO users (name, role) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id, name, role",
        (name, role),
    ).fetchone()
    assert row is not None
    return User(*row)


def set_disabled(conn: psycopg.Connection, name: str, disabled: bool) -> bool:
    cur = conn.execute("UPDATE users SET disabled = %s WHERE name = %s", (disabled, name))
    return cur.rowcount > 0


def list_users(conn: psycopg.Connection) -> list[dict[str, object]]:
    rows = conn.execute(
        "SELECT u.id, u.name, u.role, u.disabled, u.created_at,"
        " coalesce(array_agg(g.group_name ORDER BY g.group_name)"
        " FILTER (WHERE g.group_name IS NOT NULL), '{}')"
        " FROM users u LEFT JOIN user_groups g ON g.user_id = u.id GROUP BY u.id ORDER BY u.id"
    ).fetchall()
    keys = ("id", "name", "role", "disabled", "created_at", "groups")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def user_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM users").fetchone()
    return int(row[0]) if row else 0


def issue_token(
    conn: psycopg.Connection,
    user: User,
    description: str = "",
    expires_at: datetime | None = None,
) -> str:
    """Create a token for `user`; return the plain token (the only time it exists)."""
    token = new_token()
    conn.execute(
        "INSERT INTO tokens (token_hash, prefix, user_id, description, expires_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (hash_token(token), display_prefix(token), user.id, description, expires_at),
    )
    return token


def list_tokens(conn: psycopg.Connection) -> list[TokenInfo]:
    rows = conn.execute(
        "SELECT t.id, t.prefix, u.name, t.description, t.created_at, t.last_used_at,"
        " t.expires_at, t.revoked_at FROM tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id"
    ).fetchall()
    return [TokenInfo(*r) for r in rows]


def revoke_token(conn: psycopg.Connection, token_id: int) -> bool:
    row = conn.execute(
        "UPDATE tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
        (token_id,),
    ).fetchone()
    return row is not None


async def authenticate(conn: psycopg.AsyncConnection, token: str) -> User | None:
    """The live user a token belongs to, or None. The lookup is by hash (an indexed equality on
    a SHA-256 digest), so response time does not depend on how much of a guess was right; the
    stored digest is then compared in constant time as well."""
    digest = hash_token(token)
    cur = await conn.execute(
        "UPDATE tokens t SET last_used_at = now() FROM users u"
        " WHERE t.token_hash = %s AND u.id = t.user_id AND t.revoked_at IS NULL"
        " AND (t.expires_at IS NULL OR t.expires_at > now()) AND NOT u.disabled"
        " RETURNING u.id, u.name, u.role, t.id, t.token_hash",
        (digest,),
    )
    row = await cur.fetchone()
    if row is None or not hmac.compare_digest(row[4], digest):
        return None
    return User(row[0], row[1], row[2], row[3])
