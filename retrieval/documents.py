"""The `documents` table, its home: no other module reads or writes it, but for the search's join
(retrieval.hybrid) and a collection's document count (retrieval.collections).

Two sides of it. Ingestion's, sync on a worker's connection: a document's row by path, its status
and generation (what retrieval.guard checks), moves, copies and failures. People's, async on the
API's pool (sync for the CLI): listings and counts (the Files API, the chat UI, `hearth ls`,
`hearth status`, /metrics), an upload's queued row, a delete, a forced re-index, and a restored
backup's new uploads folder. A document's chunks are retrieval.index's; the few writes here that
also delete or copy chunks do so in the row's transaction, so search never sees them disagree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .collections import ensure_for_writer

# every status but 'deleted': what a listing shows
LIVE_STATUSES = ("queued", "parsing", "embedding", "indexed", "failed", "needs_ocr")
PROBLEM_STATUSES = ("failed", "needs_ocr")
BUSY_STATUSES = ("queued", "parsing", "embedding")  # on its way through ingestion


# --- ingestion's side: a document's row by path (sync, a worker's connection) ---


@dataclass(frozen=True)
class DocumentRow:
    """A document's row as ingestion needs it (whether its file changed, where it is)."""

    id: int
    path: str
    content_hash: str | None
    size: int | None
    mtime: float | None
    status: str
    collection: str
    chunk_count: int
    error: str | None


_ROW_SQL = (
    "SELECT id, path, content_hash, size, mtime, status, collection, chunk_count, error"
    " FROM documents"
)


def by_path(conn: psycopg.Connection, path: str) -> DocumentRow | None:
    """The row of the document at `path`, deleted or not."""
    row = conn.execute(_ROW_SQL + " WHERE path = %s", (path,)).fetchone()
    return DocumentRow(*row) if row else None


def generation(
    conn: psycopg.Connection, path: str, *, lock: bool = False
) -> tuple[int, str] | None:
    """The generation and status of the document at `path` (None: no row); `lock`: its row
    stays locked until the transaction ends. What retrieval.guard checks work against."""
    sql = "SELECT generation, status FROM documents WHERE path = %s"
    row = conn.execute(sql + (" FOR UPDATE" if lock else ""), (path,)).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def under(conn: psycopg.Connection, root: str) -> list[DocumentRow]:
    """Live (not deleted) documents whose file is inside the folder `root` (an email's
    attachments have no file of their own, so they are not listed)."""
    prefix = root.rstrip("/") + "/"
    rows = conn.execute(
        _ROW_SQL + " WHERE status <> 'deleted' AND left(path, length(%s)) = %s"
        " AND NOT metadata ? 'attachment_of'",
        (prefix, prefix),
    ).fetchall()
    return [DocumentRow(*r) for r in rows]


def set_status(
    conn: psycopg.Connection,
    path: str,
    status: str,
    *,
    error: str | None = None,
    collection: str = "default",
    source: str = "watch",
    **fields: Any,
) -> int:
    """Create or update the document's row with a new status; return its id."""
    cols = {"status": status, "error": error, "collection": collection, "source": source, **fields}
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    # metadata accumulates (an upload's purpose survives indexing); other columns are replaced
    updates = ", ".join(
        f"{k} = documents.{k} || EXCLUDED.{k}" if k == "metadata" else f"{k} = EXCLUDED.{k}"
        for k in cols
    )
    ensure_for_writer(conn, collection, source)
    row = conn.execute(
        f"INSERT INTO documents (path, {names}) VALUES (%s, {marks})"
        f" ON CONFLICT (path) DO UPDATE SET {updates}, updated_at = now() RETURNING id",
        (path, *cols.values()),
    ).fetchone()
    assert row is not None
    return int(row[0])


def mark_deleted(conn: psycopg.Connection, path: str) -> bool:
    """Remove a document's chunks from the index; keep its row as 'deleted'. True if it existed."""
    # here, not in retrieval.index: the row's change is the write, its chunks only go with it
    with conn.transaction():
        row = conn.execute(
            "UPDATE documents SET status = 'deleted', chunk_count = 0, error = NULL,"
            " updated_at = now() WHERE path = %s AND status <> 'deleted' RETURNING id",
            (path,),
        ).fetchone()
        if row:
            conn.execute("DELETE FROM chunks WHERE document_id = %s", (row[0],))
    return row is not None


def touch(
    conn: psycopg.Connection, path: str, size: int, mtime: float, collection: str | None = None
) -> None:
    """Record a new size/mtime (and collection) for a document whose content did not change."""
    if collection is not None:
        _ensure_for_document(conn, collection, "path = %s", path)
    conn.execute(
        "UPDATE documents SET size = %s, mtime = %s, collection = coalesce(%s, collection),"
        " updated_at = now() WHERE path = %s",
        (size, mtime, collection, path),
    )


def record_failure(
    conn: psycopg.Connection, path: str, status: str, reason: str, **fields: Any
) -> None:
    """Mark a document failed (or needs_ocr) with its reason; it has no chunks any more."""
    # here, not in retrieval.index: the row's change is the write, its chunks only go with it
    with conn.transaction():
        doc_id = set_status(conn, path, status, error=reason, chunk_count=0, **fields)
        conn.execute("DELETE FROM chunks WHERE document_id = %s", (doc_id,))


def find_by_hash(
    conn: psycopg.Connection, content_hash: str, exclude_path: str
) -> DocumentRow | None:
    """An indexed document with these exact bytes at another path."""
    row = conn.execute(
        _ROW_SQL + " WHERE content_hash = %s AND status = 'indexed' AND path <> %s"
        " ORDER BY id LIMIT 1",
        (content_hash, exclude_path),
    ).fetchone()
    return DocumentRow(*row) if row else None


def rename(
    conn: psycopg.Connection,
    doc_id: int,
    new_path: str,
    *,
    collection: str,
    size: int,
    mtime: float,
) -> None:
    """Give a document a new path (a move): its chunks and embeddings stay as they are."""
    with conn.transaction():
        _ensure_for_document(conn, collection, "id = %s", doc_id)
        conn.execute("DELETE FROM documents WHERE path = %s AND id <> %s", (new_path, doc_id))
        conn.execute(
            "UPDATE documents SET path = %s, collection = %s, size = %s, mtime = %s,"
            " updated_at = now() WHERE id = %s",
            (new_path, collection, size, mtime, doc_id),
        )


def copy_document(
    conn: psycopg.Connection,
    doc_id: int,
    new_path: str,
    *,
    collection: str,
    source: str,
    size: int,
    mtime: float,
) -> int:
    """Index a copy of an indexed document under a new path, reusing its chunks' embeddings."""
    # here, not in retrieval.index: a new row is the write; its chunks are copied in SQL with it
    with conn.transaction():
        ensure_for_writer(conn, collection, source)
        row = conn.execute(
            "INSERT INTO documents (path, source, collection, content_hash, size, mtime, mime,"
            " title, status, chunk_count, metadata, indexed_at)"
            " SELECT %s, %s, %s, content_hash, %s, %s, mime, title, 'indexed', chunk_count,"
            " metadata, now() FROM documents WHERE id = %s"
            " ON CONFLICT (path) DO UPDATE SET source = EXCLUDED.source,"
            " collection = EXCLUDED.collection, content_hash = EXCLUDED.content_hash,"
            " size = EXCLUDED.size, mtime = EXCLUDED.mtime, mime = EXCLUDED.mime,"
            " title = EXCLUDED.title, status = 'indexed', error = NULL,"
            " chunk_count = EXCLUDED.chunk_count, metadata = EXCLUDED.metadata,"
            " indexed_at = now(), updated_at = now() RETURNING id",
            (new_path, source, collection, size, mtime, doc_id),
        ).fetchone()
        assert row is not None
        new_id = int(row[0])
        conn.execute("DELETE FROM chunks WHERE document_id = %s", (new_id,))
        conn.execute(
            "INSERT INTO chunks (document_id, ordinal, text, context, heading_path, page,"
            " char_start, char_end, embedding) SELECT %s, ordinal, text, context, heading_path,"
            " page, char_start, char_end, embedding FROM chunks WHERE document_id = %s",
            (new_id, doc_id),
        )
    return new_id


def _ensure_for_document(conn: psycopg.Connection, collection: str, where: str, key: Any) -> None:
    """`ensure_for_writer` for a write that keeps the document's own source."""
    row = conn.execute(f"SELECT source FROM documents WHERE {where}", (key,)).fetchone()
    if row is not None:
        ensure_for_writer(conn, collection, row[0])


def drop_attachments(conn: psycopg.Connection, parent: str, keep: list[str]) -> None:
    """Delete the attachment documents of `parent` whose paths are not in `keep`."""
    conn.execute(
        "DELETE FROM documents WHERE metadata ->> 'attachment_of' = %s AND NOT path = ANY(%s)",
        (parent, keep),
    )


# --- people's side: as people see and change them (async on the API's pool, sync for the CLI) ---


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
    indexed_at: datetime | None  # when its chunks were last written


_COLUMNS = (
    "id, path, source, collection, status, error, size, mime, title, chunk_count,"
    " metadata->>'purpose', created_at, updated_at, indexed_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM documents"


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


async def readable_ids(
    conn: psycopg.AsyncConnection, ids: Sequence[int], readable: Sequence[str]
) -> set[int]:
    """Those of `ids` whose documents are in the `readable` collections (deleted ones too: a
    stored answer may still name them)."""
    cur = await conn.execute(
        "SELECT id FROM documents WHERE id = ANY(%s) AND collection = ANY(%s)",
        (sorted(ids), list(readable)),
    )
    return {int(r[0]) for r in await cur.fetchall()}


async def create_upload(
    conn: psycopg.AsyncConnection, path: str, *, collection: str, size: int, purpose: str
) -> DocumentInfo:
    """The row of a freshly stored upload, queued for the workers."""
    cur = await conn.execute(
        "INSERT INTO documents (path, source, collection, size, status, metadata)"
        f" VALUES (%s, 'upload', %s, %s, 'queued', %s) RETURNING {_COLUMNS}",
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
    # the row's change is the write, its chunks only go with it (as in mark_deleted)
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


@dataclass(frozen=True)
class Requeued:
    path: str
    collection: str
    source: str
    previous_status: str
    generation: int  # the document's: if it is deleted before the task runs, the task does nothing


async def mark_for_reindex(conn: psycopg.AsyncConnection, doc_id: int) -> Requeued | None:
    """Queue a settled document to be parsed and embedded again even if its file is unchanged
    (the worker skips a file whose content hash it has already indexed; this forgets the hash).
    Its chunks stay searchable until new ones replace them. None when the document is unknown,
    deleted, or already on its way through ingestion."""
    cur = await conn.execute(
        "UPDATE documents d SET status = 'queued', content_hash = NULL, error = NULL,"
        " updated_at = now() FROM (SELECT id, status FROM documents WHERE id = %s FOR UPDATE) old"
        " WHERE d.id = old.id AND old.status <> 'deleted' AND old.status <> ALL(%s)"
        " RETURNING d.path, d.collection, d.source, old.status, d.generation",
        (doc_id, list(BUSY_STATUSES)),
    )
    row = await cur.fetchone()
    return Requeued(*row) if row else None


async def restore_status(conn: psycopg.AsyncConnection, doc_id: int, status: str) -> None:
    """Undo `mark_for_reindex` when the task could not be queued (the hash stays forgotten, so
    the next rescan parses the file again: harmless)."""
    await conn.execute(
        "UPDATE documents SET status = %s, updated_at = now() WHERE id = %s AND status = 'queued'",
        (status, doc_id),
    )


_BY_STATUS = (
    "SELECT status, count(*), coalesce(sum(chunk_count), 0) FROM documents"
    " GROUP BY status ORDER BY status"
)


async def count_by_status(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """How many documents are in each status (deleted ones too)."""
    cur = await conn.execute(_BY_STATUS)
    return {str(status): int(n) for status, n, _ in await cur.fetchall()}


def status_summary(conn: psycopg.Connection) -> list[tuple[str, int, int]]:
    """(status, documents, chunks) for each status, in status order."""
    rows = conn.execute(_BY_STATUS).fetchall()
    return [(str(s), int(n), int(c)) for s, n, c in rows]


def recent_problems(conn: psycopg.Connection, limit: int = 20) -> list[tuple[str, str | None]]:
    """(path, error) of the documents that failed or need OCR, most recently changed first."""
    rows = conn.execute(
        "SELECT path, error FROM documents WHERE status = ANY(%s)"
        " ORDER BY updated_at DESC LIMIT %s",
        (list(PROBLEM_STATUSES), limit),
    ).fetchall()
    return [(str(p), e) for p, e in rows]


def move_uploads(conn: psycopg.Connection, old: str, new: str) -> int:
    """Point uploaded documents (and their attachments) stored under the folder `old` at the
    same files under `new` (a backup restored elsewhere); how many documents moved."""
    if old == new:
        return 0
    cur = conn.execute(
        "UPDATE documents SET path = %(new)s || substr(path, length(%(old)s) + 1)"
        " WHERE left(path, length(%(old)s) + 1) = %(old)s || '/'",
        {"old": old, "new": new},
    )
    conn.execute(
        "UPDATE documents SET metadata = jsonb_set(metadata, '{attachment_of}',"
        " to_jsonb(%(new)s || substr(metadata ->> 'attachment_of', length(%(old)s) + 1)))"
        " WHERE left(metadata ->> 'attachment_of', length(%(old)s) + 1) = %(old)s || '/'",
        {"old": old, "new": new},
    )
    return cur.rowcount
