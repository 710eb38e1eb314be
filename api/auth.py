"""Bearer-token authentication for every /v1 route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .errors import APIError
from .state import State
from .store.accounts import User, authenticate

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def current_user(request: Request, state: State) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
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
