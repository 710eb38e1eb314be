"""Writing the index: documents and their chunks, one transaction per document.

With retrieval.documents (documents as people list and change them) the home of the `documents`
and `chunks` tables; chunks are also read by the search (retrieval.hybrid, retrieval.passages)
and re-embedded by retrieval.reembed, which owns `index_meta`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from core.types import Chunk, Document

from .collections import ensure_for_writer

_CHUNK_COLUMNS = (
    "document_id",
    "ordinal",
    "text",
    "context",
    "heading_path",
    "page",
    "char_start",
    "char_end",
    "embedding",
)
_CHUNK_TYPES = [
    "bigint",
    "integer",
    "text",
    "text",
    "text[]",
    "integer",
    "integer",
    "integer",
    "vector",
]


class IndexModelChanged(RuntimeError):
    """The index was switched (`hearth reindex`) away from the model these vectors come from;
    embed them again with the index's model, `index_model`."""

    def __init__(self, model: str, index_model: str) -> None:
        super().__init__(
            f"the index now uses embedding model {index_model!r}; vectors of {model!r} are refused"
        )
        self.model = model
        self.index_model = index_model


@dataclass(frozen=True)
class DocumentRow:
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


def get_document(conn: psycopg.Connection, path: str) -> DocumentRow | None:
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


def chunk_count(conn: psycopg.Connection) -> int:
    """How many chunks the index holds (the BM25 statistics keep the count, migration 0003)."""
    row = conn.execute("SELECT n FROM bm25_stats").fetchone()
    return int(row[0]) if row else 0


def documents_under(conn: psycopg.Connection, root: str) -> list[DocumentRow]:
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


def replace_chunks(
    conn: psycopg.Connection, doc: Document, embeddings: np.ndarray, *, model: str | None = None
) -> int:
    """Atomically swap the document's chunks for new ones and mark it indexed; return its id.

    Search sees either all the old chunks or all the new ones, never a mix or nothing. `model`
    (the embedder's name) is checked against the index: vectors of a model the index was
    switched away from raise IndexModelChanged.
    """
    if len(doc.chunks) != len(embeddings):
        raise ValueError("one embedding per chunk is required")
    with conn.transaction():
        if model is not None:
            check_model(conn, model)
        doc_id = set_status(
            conn,
            doc.path,
            "indexed",
            collection=doc.collection,
            source=doc.source,
            content_hash=doc.content_hash,
            size=doc.size,
            mtime=doc.mtime,
            mime=doc.mime,
            title=doc.title,
            chunk_count=len(doc.chunks),
            metadata=Jsonb(doc.metadata),
            indexed_at=_now(conn),
        )
        conn.execute("DELETE FROM chunks WHERE document_id = %s", (doc_id,))
        _copy_chunks(conn, doc_id, doc.chunks, embeddings)
    return doc_id


def check_model(conn: psycopg.Connection, model: str) -> None:
    """Refuse vectors of a retired model. The model row is read FOR SHARE (to the end of the
    caller's transaction): a switch waits for this write, and a write after it sees the switch."""
    row = conn.execute(
        "SELECT value FROM index_meta WHERE key = 'embed_model' FOR SHARE"
    ).fetchone()
    retired = conn.execute(
        "SELECT value FROM index_meta WHERE key = 'retired_embed_models'"
    ).fetchone()
    current = row[0] if row else None
    if current and model != current and retired and model in json.loads(retired[0]):
        raise IndexModelChanged(model, current)


def _now(conn: psycopg.Connection) -> Any:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


def _copy_chunks(
    conn: psycopg.Connection, doc_id: int, chunks: Sequence[Chunk], embeddings: np.ndarray
) -> None:
    sql = f"COPY chunks ({', '.join(_CHUNK_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)"
    with conn.cursor() as cur, cur.copy(sql) as copy:
        copy.set_types(_CHUNK_TYPES)
        for chunk, vec in zip(chunks, embeddings, strict=True):
            copy.write_row(
                (
                    doc_id,
                    chunk.ordinal,
                    chunk.text,
                    chunk.context,
                    list(chunk.heading_path),
                    chunk.page,
                    chunk.char_start,
                    chunk.char_end,
                    np.asarray(vec, dtype=np.float32),
                )
            )


def mark_deleted(conn: psycopg.Connection, path: str) -> bool:
    """Remove a document's chunks from the index; keep its row as 'deleted'. True if it existed."""
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
