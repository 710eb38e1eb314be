"""Browser sessions of the chat UI. A token is exchanged once for a random session id that lives in
an httpOnly cookie; only the id's SHA-256 is stored. A session never outlives the token it was
opened with: revoking the token, or its expiry, ends the session too."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import psycopg

from core.tokens import hash_token

from .accounts import User

SESSION_TTL = timedelta(days=30)


async def create_session(
    conn: psycopg.AsyncConnection, token: str, ttl: timedelta = SESSION_TTL
) -> tuple[str, datetime] | None:
    """Open a session for the (already authenticated) `token`'s user; return the session id (the
    only time it exists) and when the session expires. None if the token is not live."""
    session_id = secrets.token_urlsafe(32)
    async with conn.transaction():
        await conn.execute("DELETE FROM ui_sessions WHERE expires_at <= now()")
        cur = await conn.execute(
            "INSERT INTO ui_sessions (session_hash, user_id, token_id, expires_at)"
            " SELECT %s, t.user_id, t.id, least(now() + %s, t.expires_at) FROM tokens t"
            " WHERE t.token_hash = %s AND t.revoked_at IS NULL"
            " AND (t.expires_at IS NULL OR t.expires_at > now())"
            " RETURNING expires_at",
            (hash_token(session_id), ttl, hash_token(token)),
        )
        row = await cur.fetchone()
    return (session_id, row[0]) if row else None


async def session_user(conn: psycopg.AsyncConnection, session_id: str) -> tuple[User, str] | None:
    """The user of a live session (not expired, token still valid, user not disabled) and the
    session's hash, or None. A read only: the session's last sight is recorded after the
    response (`seen_cte`, api.store.writer)."""
    digest = hash_token(session_id)
    cur = await conn.execute(
        "SELECT u.id, u.name, u.role, t.id FROM ui_sessions s"
        " JOIN users u ON u.id = s.user_id JOIN tokens t ON t.id = s.token_id"
        " WHERE s.session_hash = %s AND s.expires_at > now() AND NOT u.disabled"
        " AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
        (digest,),
    )
    row = await cur.fetchone()
    # limits count against the token it was opened with
    return (User(*row), digest) if row else None


def seen_cte(session_hashes: list[str]) -> tuple[str, dict[str, Any]]:
    """Recording that these sessions were used just now, as the CTE of a statement and its
    parameters (api.store.writer joins it with other tables' writes)."""
    cte = (
        "seen AS (UPDATE ui_sessions SET last_seen_at = now()"
        " WHERE session_hash = ANY(%(seen)s::text[]))"
    )
    return cte, {"seen": session_hashes}


async def end_session(conn: psycopg.AsyncConnection, session_id: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM ui_sessions WHERE session_hash = %s RETURNING id", (hash_token(session_id),)
    )
    return await cur.fetchone() is not None
