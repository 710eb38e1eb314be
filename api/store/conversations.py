"""Server-side conversations: a user's threads and their turns, with citations. The home of the
`conversations` and `messages` tables."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from retrieval import documents

WITHHELD = "(This answer cited documents you can no longer read, so it is hidden.)"


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


def cites_unreadable(citations: Sequence[dict[str, Any]], readable: Sequence[str]) -> bool:
    """Whether a stored answer drew on a collection the user may no longer read: its text may
    quote those passages, so it is neither shown nor replayed into a prompt."""
    allowed = set(readable)
    return any(c.get("collection") not in allowed for c in citations)


async def open_conversation(
    conn: psycopg.AsyncConnection,
    user_id: int,
    conversation_id: str | None,
    readable: Sequence[str],
    history: Sequence[tuple[str, str]] = (),
) -> tuple[str, list[Turn]]:
    """Continue the user's conversation `conversation_id` (with its turns) or pick an id for a
    new one, which `add_turn` creates with its first turn (a failed request leaves nothing).

    Without an id, a stateless client's `history` (the earlier (role, text) turns it sent) that
    matches a stored conversation of the user's continues that one (`find_by_history`).

    An id that is malformed or belongs to someone else is answered like an unknown one: a new
    conversation, so ids reveal nothing. Answers that cite a collection outside `readable`
    are left out of the history; incomplete ones (cut short by the backend) are replayed as
    they were sent.
    """
    if not conversation_id and history:
        conversation_id = await find_by_history(conn, user_id, history)
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
                    "SELECT role, content, citations FROM messages WHERE conversation_id = %s"
                    " ORDER BY id",
                    (cid,),
                )
                return cid, [
                    Turn(role, content)
                    for role, content, cited in await cur.fetchall()
                    if not cites_unreadable(cited, readable)
                ]
    return new_conversation_id(), []


def new_conversation_id() -> str:
    """The id of a conversation `add_turn` will create with its first turn."""
    return str(uuid.uuid4())


def opening(question: str) -> bytes:
    """What a conversation is found by: the SHA-256 of its first question (as stored)."""
    return hashlib.sha256(question.strip().encode()).digest()


async def find_by_history(
    conn: psycopg.AsyncConnection, user_id: int, history: Sequence[tuple[str, str]]
) -> str | None:
    """The user's stored conversation that `history` (a client's earlier user and assistant
    turns, oldest first) continues: as many turns stored, opened by the same question, and the
    same questions in the same order (answers are not compared: clients send them back in their
    own shape, with footers or without). The most recently updated one when several match."""
    turns = [(role, text) for role, text in history if role in ("user", "assistant")]
    asked = [text.strip() for role, text in turns if role == "user"]
    if not asked:
        return None
    cur = await conn.execute(
        "SELECT c.id FROM conversations c WHERE c.user_id = %s AND c.opening = %s"
        " AND (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) = %s"
        " ORDER BY c.updated_at DESC LIMIT 10",
        (user_id, opening(asked[0]), len(turns)),
    )
    for (cid,) in await cur.fetchall():
        cur = await conn.execute(
            "SELECT content FROM messages WHERE conversation_id = %s AND role = 'user' ORDER BY id",
            (cid,),
        )
        if [r[0].strip() for r in await cur.fetchall()] == asked:
            return str(cid)
    return None


@dataclass(frozen=True)
class NewTurn:
    """A question and its answer, to be stored (`add_turns`). `conversation_id` comes from
    `open_conversation`, so it is the user's own. `incomplete`: the backend failed mid-answer
    and `answer` is the part sent."""

    conversation_id: str
    user_id: int
    question: str
    answer: str
    citations: list[dict[str, Any]]
    prompt_tokens: int | None
    completion_tokens: int | None
    incomplete: bool = False


def turns_ctes(turns: Sequence[NewTurn]) -> tuple[list[str], dict[str, Any]]:
    """Storing `turns`, in order, as the CTEs of one statement and their parameters (one
    statement for any number of turns: api.store.writer joins them with other tables' writes).
    A conversation's first turn creates it, titled after the question."""
    first: dict[str, NewTurn] = {}
    for t in turns:
        first.setdefault(t.conversation_id, t)
    role, content, cites, prompt, completion, cut = [], [], [], [], [], []
    for t in turns:
        role += ["user", "assistant"]
        content += [t.question, t.answer]
        cites += [Jsonb([]), Jsonb(t.citations)]
        prompt += [None, t.prompt_tokens]
        completion += [None, t.completion_tokens]
        cut += [False, t.incomplete]
    params = {
        "c_id": list(first),
        "c_user": [t.user_id for t in first.values()],
        "c_title": [t.question[:80] for t in first.values()],
        "c_opening": [opening(t.question) for t in first.values()],
        "m_conversation": [t.conversation_id for t in turns for _ in range(2)],
        "m_role": role,
        "m_content": content,
        "m_citations": cites,
        "m_prompt": prompt,
        "m_completion": completion,
        "m_incomplete": cut,
    }
    ctes = [
        "new_conversations AS (INSERT INTO conversations (id, user_id, title, opening)"
        " SELECT * FROM unnest(%(c_id)s::uuid[], %(c_user)s::bigint[], %(c_title)s::text[],"
        " %(c_opening)s::bytea[]) ON CONFLICT (id) DO NOTHING)",
        # a row the statement itself inserted is not seen here: a new one has updated_at = now()
        "continued AS (UPDATE conversations SET updated_at = now()"
        " WHERE id = ANY(%(c_id)s::uuid[]))",
        "new_messages AS (INSERT INTO messages (conversation_id, role, content, citations,"
        " prompt_tokens, completion_tokens, incomplete)"
        " SELECT c, r, t, j, p, q, i FROM unnest(%(m_conversation)s::uuid[], %(m_role)s::text[],"
        " %(m_content)s::text[], %(m_citations)s::jsonb[], %(m_prompt)s::int[],"
        " %(m_completion)s::int[], %(m_incomplete)s::bool[])"
        " WITH ORDINALITY AS m(c, r, t, j, p, q, i, o) ORDER BY o)",
    ]
    return ctes, params


async def add_turns(conn: psycopg.AsyncConnection, turns: Sequence[NewTurn]) -> None:
    """Store turns, in order, in one statement (`turns_ctes`)."""
    if turns:
        ctes, params = turns_ctes(turns)
        await conn.execute("WITH " + ", ".join(ctes) + " SELECT 1", params)


async def add_turn(
    conn: psycopg.AsyncConnection,
    conversation_id: str,
    user_id: int,
    question: str,
    answer: str,
    citations: list[dict[str, Any]],
    prompt_tokens: int | None,
    completion_tokens: int | None,
    incomplete: bool = False,
) -> None:
    """Store one turn (`add_turns`)."""
    turn = NewTurn(
        conversation_id,
        user_id,
        question,
        answer,
        citations,
        prompt_tokens,
        completion_tokens,
        incomplete,
    )
    await add_turns(conn, [turn])


def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


async def list_conversations(
    conn: psycopg.AsyncConnection, user_id: int, limit: int = 100
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT c.id, c.title, c.created_at, c.updated_at,"
        " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
        " FROM conversations c WHERE c.user_id = %s ORDER BY c.updated_at DESC LIMIT %s",
        (user_id, limit),
    )
    return [_summary(*row) for row in await cur.fetchall()]


async def get_conversation(
    conn: psycopg.AsyncConnection,
    user_id: int,
    conversation_id: str,
    readable: Sequence[str],
) -> dict[str, Any] | None:
    """The user's conversation with its messages and citations; None if it is not theirs.

    Losing access takes effect in old conversations too: an answer that cited a collection
    outside `readable` is withheld (its text may quote it), and a source whose document has
    since moved out of `readable` is left out."""
    cid = _uuid(conversation_id)
    if cid is None:
        return None
    cur = await conn.execute(
        "SELECT c.id, c.title, c.created_at, c.updated_at,"
        " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
        " FROM conversations c WHERE c.id = %s AND c.user_id = %s",
        (cid, user_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        "SELECT role, content, citations, prompt_tokens, completion_tokens, created_at,"
        " incomplete FROM messages WHERE conversation_id = %s ORDER BY id",
        (cid,),
    )
    messages = []
    for r, c, cit, p, t, at, cut in await cur.fetchall():
        withheld = cites_unreadable(cit, readable)
        messages.append(
            {
                "role": r,
                "content": WITHHELD if withheld else c,
                "sources": [] if withheld else cit,
                "withheld": withheld,
                "incomplete": cut,  # the backend failed mid-answer: `content` is the part sent
                "prompt_tokens": p,
                "completion_tokens": t,
                "created_at": int(at.timestamp()),
            }
        )
    ids = {s.get("document_id") for m in messages for s in m["sources"]}
    allowed = await documents.readable_ids(conn, [i for i in ids if isinstance(i, int)], readable)
    for m in messages:
        m["sources"] = [s for s in m["sources"] if s.get("document_id") in allowed]
    return {**_summary(*row), "messages": messages}


async def rename_conversation(
    conn: psycopg.AsyncConnection, user_id: int, conversation_id: str, title: str
) -> bool:
    cid = _uuid(conversation_id)
    if cid is None:
        return False
    cur = await conn.execute(
        "UPDATE conversations SET title = %s, updated_at = now() WHERE id = %s AND user_id = %s"
        " RETURNING id",
        (title[:200], cid, user_id),
    )
    return await cur.fetchone() is not None


async def delete_conversation(
    conn: psycopg.AsyncConnection, user_id: int, conversation_id: str
) -> bool:
    cid = _uuid(conversation_id)
    if cid is None:
        return False
    cur = await conn.execute(
        "DELETE FROM conversations WHERE id = %s AND user_id = %s RETURNING id", (cid, user_id)
    )
    return await cur.fetchone() is not None


def _summary(cid: Any, title: str, created: Any, updated: Any, count: int) -> dict[str, Any]:
    return {
        "id": str(cid),
        "object": "conversation",
        "title": title,
        "created_at": int(created.timestamp()),
        "updated_at": int(updated.timestamp()),
        "message_count": int(count),
    }
