"""What the UI's documents view needs beyond the Files API: when each document was last indexed,
and a forced re-index. Async SQL on the API's pool; like the Files API, it sees only documents in
the collections the caller may read (`readable`, from api.store.access).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import psycopg

from retrieval.documents import LIVE_STATUSES, PROBLEM_STATUSES

BUSY_STATUSES = ("queued", "parsing", "embedding")


def _epoch(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


async def list_documents(
    conn: psycopg.AsyncConnection, readable: Sequence[str], limit: int = 1000
) -> list[dict[str, Any]]:
    """Every live document in the `readable` collections, newest first, as the view shows it."""
    cur = await conn.execute(
        "SELECT id, path, source, collection, status, error, size, mime, title, chunk_count,"
        " created_at, updated_at, indexed_at FROM documents"
        " WHERE status = ANY(%s) AND collection = ANY(%s) ORDER BY id DESC LIMIT %s",
        (list(LIVE_STATUSES), list(readable), limit),
    )
    out = []
    for row in await cur.fetchall():
        (doc_id, path, source, collection, status, error, size, mime, title, chunks) = row[:10]
        created, updated, indexed = row[10:]
        out.append(
            {
                "id": doc_id,
                "file_id": f"file-{doc_id}",
                "filename": PurePath(path).name,
                "path": path,
                "title": title,
                "source": source,
                "collection": collection,
                "status": status,
                "error": error if status in PROBLEM_STATUSES else None,
                "bytes": size,
                "mime": mime,
                "chunk_count": chunks,
                "created_at": _epoch(created),
                "updated_at": _epoch(updated),
                "indexed_at": _epoch(indexed),
            }
        )
    return out


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


async def find(
    conn: psycopg.AsyncConnection, doc_id: int, readable: Sequence[str]
) -> tuple[str, str] | None:
    """(status, collection) of a live document in the `readable` collections, else None."""
    cur = await conn.execute(
        "SELECT status, collection FROM documents"
        " WHERE id = %s AND status <> 'deleted' AND collection = ANY(%s)",
        (doc_id, list(readable)),
    )
    row = await cur.fetchone()
    return (str(row[0]), str(row[1])) if row else None
