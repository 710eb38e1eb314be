"""Users and bearer tokens. Tokens are stored as SHA-256 only; the plain token is shown once.

The home of the `users` and `tokens` tables (user_groups: api.store.access; ui_sessions:
api.store.sessions, which joins these two to check a session)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from core.tokens import display_prefix, hash_token, new_token

from . import tokencache


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    token_id: int | None = None  # the token this request came with (rate limits, request log)
    frontend: bool = False  # that token is a front-end's: it may name the person it speaks for
    forwarded: bool = False  # this user is a person a front-end token named (limits: per person)


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
    frontend: bool = False


def ensure_user(conn: psycopg.Connection, name: str, role: str = "user") -> User:
    row = conn.execute(
        "INSERT INTO users (name, role) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id, name, role",
        (name, role),
    ).fetchone()
    assert row is not None
    return User(*row)


def find_user(conn: psycopg.Connection, name: str) -> User | None:
    row = conn.execute("SELECT id, name, role FROM users WHERE name = %s", (name,)).fetchone()
    return User(*row) if row else None


async def proxied_user(conn: psycopg.AsyncConnection, name: str) -> tuple[User, bool]:
    """The user a trusted proxy names, created with role `user` on first sight; and whether
    they are disabled."""
    cur = await conn.execute(
        "INSERT INTO users (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name ="
        " EXCLUDED.name RETURNING id, name, role, disabled",
        (name,),
    )
    row = await cur.fetchone()
    assert row is not None
    return User(row[0], row[1], row[2]), bool(row[3])


def set_disabled(conn: psycopg.Connection, name: str, disabled: bool) -> bool:
    """Disable (or enable) a user; their tokens stop working at once in every API process
    (api.store.tokencache), when the caller commits."""
    cur = conn.execute("UPDATE users SET disabled = %s WHERE name = %s", (disabled, name))
    if cur.rowcount and disabled:
        tokencache.notify(conn)
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
    *,
    frontend: bool = False,
) -> str:
    """Create a token for `user`; return the plain token (the only time it exists).
    `frontend`: a trusted front-end's token, which may name the person a request is for."""
    token = new_token()
    conn.execute(
        "INSERT INTO tokens (token_hash, prefix, user_id, description, expires_at, frontend)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (hash_token(token), display_prefix(token), user.id, description, expires_at, frontend),
    )
    return token


def list_tokens(conn: psycopg.Connection) -> list[TokenInfo]:
    rows = conn.execute(
        "SELECT t.id, t.prefix, u.name, t.description, t.created_at, t.last_used_at,"
        " t.expires_at, t.revoked_at, t.frontend FROM tokens t JOIN users u ON u.id = t.user_id"
        " ORDER BY t.id"
    ).fetchall()
    return [TokenInfo(*r) for r in rows]


def revoke_token(conn: psycopg.Connection, token_id: int) -> bool:
    """Revoke a token; it stops working at once in every API process (api.store.tokencache),
    when the caller commits."""
    row = conn.execute(
        "UPDATE tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
        (token_id,),
    ).fetchone()
    if row is not None:
        tokencache.notify(conn)
    return row is not None


async def authenticate(conn: psycopg.AsyncConnection, token: str) -> User | None:
    """The live user a token belongs to, or None. The lookup is by hash (an indexed equality on
    a SHA-256 digest), so response time does not depend on how much of a guess was right; the
    stored digest is then compared in constant time as well."""
    digest = hash_token(token)
    cur = await conn.execute(
        "UPDATE tokens t SET last_used_at = now() FROM users u"
        f" WHERE u.id = t.user_id AND {_LIVE_TOKEN}"
        " RETURNING u.id, u.name, u.role, t.id, t.token_hash, t.frontend",
        (digest,),
    )
    return _user_of(await cur.fetchone(), digest)


async def lookup(conn: psycopg.AsyncConnection, digest: str) -> tuple[User, datetime | None] | None:
    """The live user of the token whose SHA-256 is `digest`, and when the token expires; None
    for a token that is unknown, revoked, expired or whose user is disabled. A read only: the
    token's use is recorded after the response (`touch_cte`, api.store.writer). The stored
    digest is compared in constant time, as in `authenticate`."""
    cur = await conn.execute(
        "SELECT u.id, u.name, u.role, t.id, t.token_hash, t.frontend, t.expires_at"
        f" FROM tokens t JOIN users u ON u.id = t.user_id WHERE {_LIVE_TOKEN}",
        (digest,),
    )
    row = await cur.fetchone()
    user = _user_of(row, digest)
    return None if user is None or row is None else (user, row[6])


# the token whose hash is the parameter, if it may be used: not revoked, not expired, and its
# user not disabled (tokens t, users u)
_LIVE_TOKEN = (
    "t.token_hash = %s AND t.revoked_at IS NULL"
    " AND (t.expires_at IS NULL OR t.expires_at > now()) AND NOT u.disabled"
)


def _user_of(row: tuple[Any, ...] | None, digest: str) -> User | None:
    """The user of a row that starts (u.id, u.name, u.role, t.id, t.token_hash, t.frontend),
    or None when there is none or its stored digest is not `digest` (compared in constant time)."""
    if row is None or not hmac.compare_digest(row[4], digest):
        return None
    return User(row[0], row[1], row[2], row[3], frontend=row[5])


def touch_cte(token_ids: list[int]) -> tuple[str, dict[str, Any]]:
    """Recording that these tokens were used just now, as the CTE of a statement and its
    parameters (api.store.writer joins it with other tables' writes)."""
    cte = "touched AS (UPDATE tokens SET last_used_at = now() WHERE id = ANY(%(used)s::bigint[]))"
    return cte, {"used": token_ids}


async def forwarded_user(
    conn: psycopg.AsyncConnection, frontend: User, key: str, names: list[str]
) -> tuple[User, bool]:
    """The Hearth user for the person `frontend` (a front-end token's user) names by `key`
    (their stable id at the front-end), created on first sight with role `user` (the trigger
    on users gives them their personal collection), named after the first of `names` (email,
    display name) not taken yet. Returns the user and whether they are disabled. The person's
    own role applies, never the front-end's."""
    external = f"{frontend.id}:{key}"
    cur = await conn.execute(
        "SELECT id, name, role, disabled FROM users WHERE external_id = %s", (external,)
    )
    row = await cur.fetchone()
    if row is None:
        tag = hashlib.sha256(external.encode()).hexdigest()[:8]
        for name in [*(n for n in names if n), f"person-{tag}"]:
            for candidate in (name[:100], f"{name[:90]}#{tag}"):
                cur = await conn.execute(
                    "INSERT INTO users (name, role, external_id) VALUES (%s, 'user', %s)"
                    " ON CONFLICT DO NOTHING RETURNING id, name, role, disabled",
                    (candidate, external),
                )
                row = await cur.fetchone()
                if row is not None:
                    break
                cur = await conn.execute(  # a concurrent first request may have created them
                    "SELECT id, name, role, disabled FROM users WHERE external_id = %s",
                    (external,),
                )
                row = await cur.fetchone()
                if row is not None:
                    break
            if row is not None:
                break
    if row is None:
        raise RuntimeError(f"no free user name for the forwarded person {external!r}")
    user = User(row[0], row[1], row[2], frontend.token_id, forwarded=True)
    return user, bool(row[3])
