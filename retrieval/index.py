"""The `chunks` table: a document's chunks written in one transaction (replace_chunks), and the
index's chunk count. Its home; the search reads chunks (retrieval.hybrid, retrieval.passages,
retrieval.context), retrieval.reembed re-embeds them and owns `index_meta`. A document's row
(its status, path, generation) is retrieval.documents'."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from core.types import Chunk, Document

from . import documents

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


def chunk_count(conn: psycopg.Connection) -> int:
    """How many chunks the index holds (the BM25 statistics keep the count, migration 0003)."""
    row = conn.execute("SELECT n FROM bm25_stats").fetchone()
    return int(row[0]) if row else 0


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
    # here and not in retrieval.documents: the chunks are the write, the row's status follows them
    with conn.transaction():
        if model is not None:
            check_model(conn, model)
        doc_id = documents.set_status(
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
