"""Server-side conversations: list, read (with citations), rename, delete — only the caller's own.

Another user's conversation id is answered exactly like an unknown one (404), so ids reveal
nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..auth import CurrentUser
from ..errors import APIError
from ..state import State
from ..store import access
from ..store import conversations as store

router = APIRouter(prefix="/v1/conversations")


class Rename(BaseModel):
    title: str = Field(min_length=1, max_length=200)


def _missing(conversation_id: str) -> APIError:
    return APIError(
        404,
        f"No conversation with id '{conversation_id}'.",
        param="id",
        code="conversation_not_found",
    )


@router.get("")
async def list_conversations(state: State, user: CurrentUser) -> dict[str, Any]:
    async with state.pool.connection() as conn:
        data = await store.list_conversations(conn, user.id)
    return {"object": "list", "data": data}


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, state: State, user: CurrentUser) -> dict[str, Any]:
    async with state.pool.connection() as conn:
        found = await store.get_conversation(
            conn, user.id, conversation_id, await access.readable(conn, user)
        )
    if found is None:
        raise _missing(conversation_id)
    return found


@router.patch("/{conversation_id}")
async def rename_conversation(
    conversation_id: str, body: Rename, state: State, user: CurrentUser
) -> dict[str, Any]:
    async with state.pool.connection() as conn:
        if not await store.rename_conversation(conn, user.id, conversation_id, body.title):
            raise _missing(conversation_id)
        found = await store.get_conversation(
            conn, user.id, conversation_id, await access.readable(conn, user)
        )
    assert found is not None
    return {k: v for k, v in found.items() if k != "messages"}


@router.delete("/{conversation_id}")
async def delete_conversation(
    conversation_id: str, state: State, user: CurrentUser
) -> dict[str, Any]:
    async with state.pool.connection() as conn:
        if not await store.delete_conversation(conn, user.id, conversation_id):
            raise _missing(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
