"""Bearer-token authentication for every /v1 route (or the chat UI's session cookie)."""

from __future__ import annotations

import logging
import re
from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, Request

from core.tokens import hash_token

from .errors import APIError
from .ratelimit import retry_after
from .state import State
from .store import sessions
from .store.accounts import User, forwarded_user, lookup, proxied_user
from .ui import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE

log = logging.getLogger(__name__)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}

# What Open WebUI forwards with ENABLE_FORWARD_USER_INFO_HEADERS=true, on every request it makes
# to a connection (chat, task prompts, model list): its user's id (a UUID, stable), email, name
# (percent-encoded by newer releases) and role (not believed: the person's Hearth role applies)
FORWARD_ID = "x-openwebui-user-id"
FORWARD_EMAIL = "x-openwebui-user-email"
FORWARD_NAME = "x-openwebui-user-name"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


async def _session_user(request: Request, state: State) -> User | None:
    """The chat UI's alternative to a bearer token: the user of a valid `hearth_session` cookie
    (api/routes/ui.py signs in), or None without a cookie. A cookie that no longer names a live
    session is a 401; a live one on a state-changing request without the UI's header is a 403
    (CSRF)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    async with state.pool.connection() as conn:
        found = await sessions.session_user(conn, session_id)
    if found is None:
        raise APIError(
            401,
            "Session expired or signed out: sign in again.",
            code="invalid_session",
            headers=_CHALLENGE,
        )
    user, digest = found
    state.writer.seen(digest)  # its last sight, after the response (api.store.writer)
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
        user, disabled = await proxied_user(conn, name[:100])
    if disabled:
        raise APIError(401, f"The user {name!r} is disabled.", code="user_disabled")
    return user


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
    """Limits count per token; a browser session, and a person a front-end token speaks for,
    count as their user."""
    if user.token_id is None or user.forwarded:
        return f"u{user.id}"
    return f"t{user.token_id}"


async def _forwarded(request: Request, state: State, frontend: User) -> User:
    """The person a front-end token's request is for (Open WebUI's X-OpenWebUI-User-* headers),
    a Hearth user of their own; the front-end's own user when it names nobody."""
    key = (
        request.headers.get(FORWARD_ID, "").strip()
        or request.headers.get(FORWARD_EMAIL, "").strip().lower()
    )
    if not key:
        return frontend
    if len(key) > 200 or _CONTROL.search(key):
        raise APIError(
            400,
            "The forwarded user id is malformed (at most 200 printable characters).",
            param=FORWARD_ID,
            code="invalid_forwarded_user",
        )
    names = [
        _CONTROL.sub("", unquote(request.headers.get(h, ""))).strip()
        for h in (FORWARD_EMAIL, FORWARD_NAME)
    ]
    async with state.pool.connection() as conn:
        user, disabled = await forwarded_user(conn, frontend, key, names)
    if disabled:
        raise APIError(401, f"The user {user.name!r} is disabled.", code="user_disabled")
    return user


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
    user = await _token_user(state, token)
    if user.frontend:
        return await _forwarded(request, state, user)
    if request.headers.get(FORWARD_ID) or request.headers.get(FORWARD_EMAIL):
        log.debug(
            "forwarded user headers ignored: token %s is not a front-end token", user.token_id
        )
    return user


async def _token_user(state: State, token: str) -> User:
    """The live user of a bearer token: from this process's cache (api.store.tokencache) or the
    database; its use is recorded after the response (api.store.writer)."""
    digest = hash_token(token)
    cache = state.tokens
    user = cache.get(digest)
    if user is None:
        began = cache.generation
        async with state.pool.connection() as conn:
            found = await lookup(conn, digest)
        if found is None:
            raise APIError(
                401,
                "Invalid, expired or revoked token.",
                code="invalid_api_key",
                headers=_CHALLENGE,
            )
        user, expires_at = found
        cache.put(digest, user, expires_at, began)
    if user.token_id is not None:
        state.writer.used(user.token_id)
    return user


CurrentUser = Annotated[User, Depends(current_user)]
