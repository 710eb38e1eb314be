"""A passage in its document: the chunk a citation names and its neighbours, for the page that
shows a cited passage in context (api/routes/passages.py). Like search, it sees only chunks of
live documents in the collections the caller may read; any other chunk id finds nothing, the
same nothing as an id that never existed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from .passages import MAX_MERGED_CHUNKS

CONTEXT_CHUNKS = 2  # neighbours shown on each side of the passage


@dataclass(frozen=True)
class ContextChunk:
    id: int
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    page: int | None
    char_start: int
    char_end: int


@dataclass(frozen=True)
class InContext:
    """The cited chunk's document and the chunks around it, in document order."""

    chunk_id: int
    document_id: int
    path: str
    title: str | None
    collection: str
    mime: str | None
    chunk_count: int
    chunks: tuple[ContextChunk, ...]


_SQL = """
WITH target AS (
    SELECT c.document_id, c.ordinal, d.path, d.title, d.collection, d.mime, d.chunk_count
    FROM chunks c JOIN documents d ON d.id = c.document_id
    WHERE c.id = %(chunk)s AND d.status <> 'deleted' AND d.collection = ANY(%(readable)s::text[])
)
SELECT t.document_id, t.path, t.title, t.collection, t.mime, t.chunk_count,
       c.id, c.ordinal, c.text, c.heading_path, c.page, c.char_start, c.char_end
FROM target t JOIN chunks c ON c.document_id = t.document_id
WHERE c.ordinal BETWEEN t.ordinal - %(around)s AND t.ordinal + %(around)s
ORDER BY c.ordinal
"""


async def around_chunk(
    conn: psycopg.AsyncConnection, chunk_id: int, readable: Sequence[str]
) -> InContext | None:
    """Chunk `chunk_id` with the chunks around it: enough on each side for a merged passage
    (at most MAX_MERGED_CHUNKS chunks, retrieval.passages) and CONTEXT_CHUNKS more. None when
    the chunk does not exist, its document is deleted, or its collection is not in
    `readable`."""
    around = MAX_MERGED_CHUNKS - 1 + CONTEXT_CHUNKS
    cur = await conn.execute(
        _SQL, {"chunk": chunk_id, "readable": list(readable), "around": around}
    )
    rows = await cur.fetchall()
    if not rows:
        return None
    doc_id, path, title, collection, mime, chunk_count = rows[0][:6]
    chunks = tuple(
        ContextChunk(cid, ordinal, text, tuple(heading or ()), page, start, end)
        for (cid, ordinal, text, heading, page, start, end) in (r[6:] for r in rows)
    )
    return InContext(chunk_id, doc_id, path, title, collection, mime, chunk_count, chunks)
