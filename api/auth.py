"""Bearer-token authentication for every /v1 route (or the chat UI's session cookie)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .errors import APIError
from .ratelimit import retry_after
from .state import State
from .store import sessions
from .store.accounts import User, authenticate
from .ui import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def _session_user(request: Request, state: State) -> User | None:
    """The chat UI's alternative to a bearer token: the user of a valid `hearth_session` cookie
    (api/routes/ui.py signs in), or None without a cookie. A cookie that no longer names a live
    session is a 401; a live one on a state-changing request without the UI's header is a 403
    (CSRF)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    async with state.pool.connection() as conn:
        user = await sessions.session_user(conn, session_id)
    if user is None:
        raise APIError(
            401,
            "Session expired or signed out: sign in again.",
            code="invalid_session",
            headers=_CHALLENGE,
        )
    if request.method not in SAFE_METHODS and not request.headers.get(CSRF_HEADER):
        raise APIError(
            403,
            f"A request signed in by session cookie that changes anything must send"
            f" '{CSRF_HEADER}: 1'.",
            code="csrf_header_missing",
        )
    return user


async def _proxy_user(request: Request, state: State) -> User | None:
    """The user a trusted reverse proxy (an SSO gateway) vouches for in X-Forwarded-User, only
    when the request comes from one of TRUSTED_PROXIES; the user is created on first sight."""
    name = request.headers.get("x-forwarded-user", "").strip()
    trusted = state.settings.trusted_proxy_list
    if not name or not trusted or request.client is None or request.client.host not in trusted:
        return None
    async with state.pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO users (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name ="
            " EXCLUDED.name RETURNING id, name, role, disabled",
            (name[:100],),
        )
        row = await cur.fetchone()
    if row is None or row[3]:
        raise APIError(401, f"The user {name!r} is disabled.", code="user_disabled")
    return User(row[0], row[1], row[2])


async def current_user(request: Request, state: State) -> User:
    user = await _identify(request, state)
    await _admit(request, state, user)
    return user


async def _admit(request: Request, state: State, user: User) -> None:
    """Note who is asking in the request log, and hold them to the rate limit."""
    entry = getattr(request.state, "log", None)
    if isinstance(entry, dict):
        entry.update(user_id=user.id, token_id=user.token_id)
    wait = await state.limiter.wait_s(limit_key(user))
    if wait > 0:
        raise APIError(
            429,
            f"Rate limit reached ({state.settings.rate_limit_rps:g} requests/s, bursts of "
            f"{state.settings.rate_limit_burst}); retry in {wait:.1f} s.",
            code="rate_limit_exceeded",
            headers={"Retry-After": retry_after(wait)},
        )


def limit_key(user: User) -> str:
    """Limits count per token; a browser session counts as its user."""
    return f"t{user.token_id}" if user.token_id is not None else f"u{user.id}"


async def _identify(request: Request, state: State) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and (session := await _session_user(request, state)) is not None:
        return session
    if not header and (proxied := await _proxy_user(request, state)) is not None:
        return proxied
    if not header:
        raise APIError(
            401,
            "Missing bearer token: send 'Authorization: Bearer <token>'.",
            code="missing_api_key",
            headers=_CHALLENGE,
        )
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise APIError(
            401,
            "Malformed Authorization header: expected 'Bearer <token>'.",
            code="invalid_api_key",
            headers=_CHALLENGE,
        )
    async with state.pool.connection() as conn:
        user = await authenticate(conn, token)
    if user is None:
        raise APIError(
            401, "Invalid, expired or revoked token.", code="invalid_api_key", headers=_CHALLENGE
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]
