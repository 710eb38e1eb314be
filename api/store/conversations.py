"""Server-side conversations: a user's threads and their turns, with citations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


async def open_conversation(
    conn: psycopg.AsyncConnection, user_id: int, conversation_id: str | None, title: str
) -> tuple[str, list[Turn]]:
    """Continue the user's conversation `conversation_id` (with its turns) or start a new one.

    An id that is malformed or belongs to someone else is answered like an unknown one: a new
    conversation, so ids reveal nothing.
    """
    if conversation_id:
        try:
            cid = str(uuid.UUID(conversation_id))
        except ValueError:
            cid = None
        if cid:
            cur = await conn.execute(
                "SELECT 1 FROM conversations WHERE id = %s AND user_id = %s", (cid, user_id)
            )
            if await cur.fetchone():
                cur = await conn.execute(
                    "SELECT role, content FROM messages WHERE conversation_id = %s ORDER BY id",
                    (cid,),
                )
                return cid, [Turn(*r) for r in await cur.fetchall()]
    cid = str(uuid.uuid4())
    await conn.execute(
        "INSERT INTO conversations (id, user_id, title) VALUES (%s, %s, %s)",
        (cid, user_id, title[:200]),
    )
    return cid, []


async def add_turn(
    conn: psycopg.AsyncConnection,
    conversation_id: str,
    question: str,
    answer: str,
    citations: list[dict[str, Any]],
    prompt_tokens: int | None,
    completion_tokens: int | None,
) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO messages (conversation_id, role, content) VALUES (%s, 'user', %s)",
            (conversation_id, question),
        )
        await conn.execute(
            "INSERT INTO messages (conversation_id, role, content, citations, prompt_tokens,"
            " completion_tokens) VALUES (%s, 'assistant', %s, %s, %s, %s)",
            (conversation_id, answer, Jsonb(citations), prompt_tokens, completion_tokens),
        )
        await conn.execute(
            "UPDATE conversations SET updated_at = now() WHERE id = %s", (conversation_id,)
        )
