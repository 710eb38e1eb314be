"""Browser sessions of the chat UI. A token is exchanged once for a random session id that lives in
an httpOnly cookie; only the id's SHA-256 is stored. A session never outlives the token it was
opened with: revoking the token, or its expiry, ends the session too."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

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


async def session_user(conn: psycopg.AsyncConnection, session_id: str) -> User | None:
    """The user of a live session (not expired, token still valid, user not disabled), or None."""
    cur = await conn.execute(
        "UPDATE ui_sessions s SET last_seen_at = now() FROM users u, tokens t"
        " WHERE s.session_hash = %s AND s.expires_at > now()"
        " AND u.id = s.user_id AND NOT u.disabled"
        " AND t.id = s.token_id AND t.revoked_at IS NULL"
        " AND (t.expires_at IS NULL OR t.expires_at > now())"
        " RETURNING u.id, u.name, u.role, t.id",
        (hash_token(session_id),),
    )
    row = await cur.fetchone()
    return User(*row) if row else None  # limits count against the token it was opened with


async def end_session(conn: psycopg.AsyncConnection, session_id: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM ui_sessions WHERE session_hash = %s RETURNING id", (hash_token(session_id),)
    )
    return await cur.fetchone() is not None
