"""Reading documents back for people (the Files API, `hearth ls`), and the few writes an upload
needs: its queued row, and its removal from the index. Async, on the API's pool."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# every status but 'deleted': what a listing shows
LIVE_STATUSES = ("queued", "parsing", "embedding", "indexed", "failed", "needs_ocr")
PROBLEM_STATUSES = ("failed", "needs_ocr")


@dataclass(frozen=True)
class DocumentInfo:
    """A document as people see it: where it is, how far ingestion got, and why it failed."""

    id: int
    path: str
    source: str
    collection: str
    status: str
    error: str | None
    size: int | None
    mime: str | None
    title: str | None
    chunk_count: int
    purpose: str | None  # what the uploader said it was for (Files API); None for watched files
    created_at: datetime
    updated_at: datetime


_SELECT = (
    "SELECT id, path, source, collection, status, error, size, mime, title, chunk_count,"
    " metadata->>'purpose', created_at, updated_at FROM documents"
)


def _info(row: Sequence[Any]) -> DocumentInfo:
    return DocumentInfo(*row)


async def list_documents(
    conn: psycopg.AsyncConnection,
    *,
    readable: Sequence[str] | None = None,
    collection: str | None = None,
    statuses: Sequence[str] = LIVE_STATUSES,
    after_id: int | None = None,
    limit: int | None = 100,
    descending: bool = True,
) -> list[DocumentInfo]:
    """Documents in id order (newest first unless `descending` is False), a page at a time:
    `after_id` is the last id of the previous page. `readable` (access control) limits them to
    those collections."""
    where = ["status = ANY(%s)"]
    params: list[Any] = [list(statuses)]
    if readable is not None:
        where.append("collection = ANY(%s)")
        params.append(list(readable))
    if collection is not None:
        where.append("collection = %s")
        params.append(collection)
    if after_id is not None:
        where.append("id < %s" if descending else "id > %s")
        params.append(after_id)
    sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY id {'DESC' if descending else 'ASC'}"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    cur = await conn.execute(sql, params)
    return [_info(r) for r in await cur.fetchall()]


async def get_document(
    conn: psycopg.AsyncConnection, doc_id: int, readable: Sequence[str] | None = None
) -> DocumentInfo | None:
    """One live (not deleted) document, if its collection is in `readable` (when given)."""
    sql = f"{_SELECT} WHERE id = %s AND status <> 'deleted'"
    params: list[Any] = [doc_id]
    if readable is not None:
        sql += " AND collection = ANY(%s)"
        params.append(list(readable))
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return _info(row) if row else None


async def create_upload(
    conn: psycopg.AsyncConnection, path: str, *, collection: str, size: int, purpose: str
) -> DocumentInfo:
    """The row of a freshly stored upload, queued for the workers."""
    cur = await conn.execute(
        "INSERT INTO documents (path, source, collection, size, status, metadata)"
        " VALUES (%s, 'upload', %s, %s, 'queued', %s)"
        " RETURNING id, path, source, collection, status, error, size, mime, title, chunk_count,"
        " metadata->>'purpose', created_at, updated_at",
        (path, collection, size, Jsonb({"purpose": purpose})),
    )
    row = await cur.fetchone()
    assert row is not None
    return _info(row)


async def discard(conn: psycopg.AsyncConnection, doc_id: int) -> None:
    """Forget a queued row entirely (its upload could not be handed to the workers)."""
    await conn.execute("DELETE FROM documents WHERE id = %s AND status = 'queued'", (doc_id,))


async def delete_document(conn: psycopg.AsyncConnection, doc_id: int, path: str) -> bool:
    """Take a document out of the index: its chunks go, its row stays as 'deleted'.

    `path` must still be the document's: if a worker moved the document to another path in the
    meantime, nothing happens. True if it was live.
    """
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE documents SET status = 'deleted', chunk_count = 0, error = NULL,"
            " updated_at = now() WHERE id = %s AND path = %s AND status <> 'deleted'"
            " RETURNING id",
            (doc_id, path),
        )
        row = await cur.fetchone()
        if row:
            await conn.execute("DELETE FROM chunks WHERE document_id = %s", (doc_id,))
    return row is not None
