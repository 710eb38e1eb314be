"""The admin API (role `admin` only): users, tokens, groups, collections and grants, and the
request log. Each call runs the same functions as the `hearth` command line, on its own short
connection in a thread (administration is rare; the request path keeps the async pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import psycopg
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from core.db import connect
from workers import requestlog

from ..auth import current_user
from ..errors import APIError
from ..state import State
from ..store import access, accounts
from ..store.accounts import User

T = TypeVar("T")


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise APIError(403, "This needs an admin token.", code="admin_only")
    return user


router = APIRouter(prefix="/v1/admin", dependencies=[Depends(admin_user)])


async def _run(state: State, fn: Callable[[psycopg.Connection], T]) -> T:
    url = state.settings.database_url
    assert url is not None

    def work() -> T:
        with connect(url) as conn:
            try:
                out = fn(conn)
            except access.AccessError as exc:
                raise APIError(404, str(exc), code="not_found") from exc
            except access.AccessConflict as exc:
                raise APIError(409, str(exc), code=exc.code) from exc
            conn.commit()
            return out

    return await asyncio.to_thread(work)


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: Literal["admin", "user"] = "user"
    groups: list[str] = Field(default_factory=list)


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: bool


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field(default="", max_length=200)
    expires_in_days: float | None = Field(default=None, gt=0, le=36500)
    # a multi-user front-end's (Open WebUI): it may name the person each request is for
    frontend: bool = False


class NewCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    owner: str | None = None


class OwnerChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str | None  # a user name; null: the admins


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str | None = None
    group: str | None = None


@router.get("/users")
async def list_users(state: State) -> dict[str, Any]:
    users = await _run(state, accounts.list_users)
    for u in users:
        u["created_at"] = int(u["created_at"].timestamp())  # type: ignore[attr-defined]
    return {"object": "list", "data": users}


@router.post("/users")
async def create_user(body: NewUser, state: State) -> dict[str, Any]:
    def work(conn: psycopg.Connection) -> tuple[User, str | None]:
        if accounts.find_user(conn, body.name) is not None:
            raise APIError(409, f"A user named {body.name!r} exists.", code="user_exists")
        user = accounts.ensure_user(conn, body.name, body.role)
        for group in body.groups:
            access.add_to_group(conn, body.name, group)
        return user, access.personal_collection_of(conn, body.name)

    user, personal = await _run(state, work)
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "groups": body.groups,
        "collection": personal,  # their personal collection, created with them
    }


@router.patch("/users/{name}")
async def change_user(name: str, body: UserChange, state: State) -> dict[str, Any]:
    if not await _run(state, lambda c: accounts.set_disabled(c, name, body.disabled)):
        raise APIError(404, f"No user named {name!r}.", code="not_found")
    return {"name": name, "disabled": body.disabled}


@router.put("/users/{name}/groups/{group}")
async def join_group(name: str, group: str, state: State) -> dict[str, Any]:
    await _run(state, lambda c: access.add_to_group(c, name, group))
    return {"name": name, "group": group, "member": True}


@router.delete("/users/{name}/groups/{group}")
async def leave_group(name: str, group: str, state: State) -> dict[str, Any]:
    removed = await _run(state, lambda c: access.remove_from_group(c, name, group))
    return {"name": name, "group": group, "member": False, "removed": removed}


@router.post("/users/{name}/tokens")
async def issue_token(name: str, body: NewToken, state: State) -> dict[str, Any]:
    expires = (
        datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    )

    def work(conn: psycopg.Connection) -> str:
        user = accounts.find_user(conn, name)
        if user is None:
            raise APIError(404, f"No user named {name!r}.", code="not_found")
        return accounts.issue_token(conn, user, body.description, expires, frontend=body.frontend)

    token = await _run(state, work)
    return {
        "token": token,  # shown this once; only its SHA-256 is stored
        "user": name,
        "description": body.description,
        "frontend": body.frontend,
        "expires_at": int(expires.timestamp()) if expires else None,
    }


@router.get("/tokens")
async def list_tokens(state: State) -> dict[str, Any]:
    tokens = await _run(state, accounts.list_tokens)
    data = []
    for t in tokens:
        row = asdict(t)
        for key in ("created_at", "last_used_at", "expires_at", "revoked_at"):
            row[key] = int(row[key].timestamp()) if row[key] else None
        data.append(row)
    return {"object": "list", "data": data}


@router.delete("/tokens/{token_id}")
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**63 - 1)], state: State
) -> dict[str, Any]:
    if not await _run(state, lambda c: accounts.revoke_token(c, token_id)):
        raise APIError(404, f"No active token with id {token_id}.", code="not_found")
    return {"id": token_id, "revoked": True}


@router.get("/collections")
async def list_collections(state: State) -> dict[str, Any]:
    found = await _run(state, access.list_collections)
    return {"object": "list", "data": [asdict(c) for c in found]}


@router.post("/collections")
async def create_collection(body: NewCollection, state: State) -> dict[str, Any]:
    """Create a collection (owner: a user, or null for the admins). An existing one is left as
    it is: 200 if its owner is the one asked for, else 409 `collection_exists` (a transfer is
    `PATCH /v1/admin/collections/{name}`)."""

    def work(conn: psycopg.Connection) -> bool:
        try:
            return access.create_collection(conn, body.name, body.owner)
        except access.AccessError as exc:
            raise APIError(400, str(exc), param="name") from exc

    created = await _run(state, work)
    return {"name": body.name, "owner": body.owner, "created": created}


@router.patch("/collections/{name}")
async def change_owner(name: str, body: OwnerChange, state: State) -> dict[str, Any]:
    """Hand a collection over to another owner (null: the admins), explicitly."""
    await _run(state, lambda c: access.set_owner(c, name, body.owner))
    return {"name": name, "owner": body.owner}


@router.post("/collections/{name}/grants")
async def grant(name: str, body: Grant, state: State) -> dict[str, Any]:
    if (body.user is None) == (body.group is None):
        raise APIError(400, "Grant to exactly one of 'user' or 'group'.", param="user")
    await _run(state, lambda c: access.grant(c, name, user=body.user, group=body.group))
    return {"collection": name, "user": body.user, "group": body.group, "granted": True}


@router.delete("/collections/{name}/grants")
async def revoke_grant(
    name: str, state: State, user: str | None = None, group: str | None = None
) -> dict[str, Any]:
    if (user is None) == (group is None):
        raise APIError(400, "Revoke exactly one of 'user' or 'group'.", param="user")
    removed = await _run(state, lambda c: access.revoke(c, name, user=user, group=group))
    return {"collection": name, "user": user, "group": group, "removed": removed}


@router.get("/logs")
async def request_log(
    state: State, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    rows = await _run(state, lambda c: requestlog.recent(c, limit))
    return {"object": "list", "data": rows}
