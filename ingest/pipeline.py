"""From a file on disk to indexed chunks: fingerprint, parse, chunk, embed, write."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core.embedder import Embedder
from core.types import Document
from retrieval import index

from .chunking import chunk_elements
from .hashing import file_sha256
from .parse import ParseError, parse_file

log = logging.getLogger(__name__)

SETTLED = ("indexed", "failed", "needs_ocr")


@dataclass(frozen=True)
class IngestOptions:
    chunk_size: int = 256
    chunk_overlap: int = 32
    max_file_bytes: int = 200 * 1024 * 1024
    collection: str = "default"
    source: str = "watch"


@dataclass(frozen=True)
class IngestResult:
    path: str
    status: str  # indexed | unchanged | failed | needs_ocr | deleted | missing
    chunks: int = 0
    error: str | None = None


def _lock_key(path: str) -> int:
    """A stable 63-bit key for the per-document advisory lock."""
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") >> 1


def ingest_path(
    conn: psycopg.Connection, embedder: Embedder, path: Path, opts: IngestOptions
) -> IngestResult:
    """Bring the index in line with the file at `path` (which may have been deleted).

    Holds a per-document advisory lock so two workers never process the same file at once.
    Bad files end `failed` with a reason; they never raise.
    """
    key = str(path.resolve()) if path.exists() else os.path.abspath(path)
    conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(key),))
    try:
        return _ingest_locked(conn, embedder, Path(key), opts)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(key),))
        conn.commit()


def _ingest_locked(
    conn: psycopg.Connection, embedder: Embedder, path: Path, opts: IngestOptions
) -> IngestResult:
    key = str(path)
    if not path.is_file():
        gone = index.mark_deleted(conn, key)
        conn.commit()
        return IngestResult(key, "deleted" if gone else "missing")
    st = path.stat()
    existing = index.get_document(conn, key)
    if (
        existing
        and existing.status in SETTLED
        and existing.size == st.st_size
        and existing.mtime == st.st_mtime
    ):
        return IngestResult(key, "unchanged", existing.chunk_count)

    def fail(reason: str, status: str = "failed") -> IngestResult:
        index.set_status(
            conn,
            key,
            status,
            error=reason,
            collection=opts.collection,
            source=opts.source,
            size=st.st_size,
            mtime=st.st_mtime,
            content_hash=digest,
            chunk_count=0,
        )
        conn.execute(
            "DELETE FROM chunks WHERE document_id = (SELECT id FROM documents WHERE path = %s)",
            (key,),
        )
        conn.commit()
        log.warning("%s: %s", key, reason)
        return IngestResult(key, status, error=reason)

    digest: str | None = None
    if st.st_size > opts.max_file_bytes:
        return fail(
            f"file too large: {st.st_size / 2**20:.1f} MB is over the "
            f"{opts.max_file_bytes / 2**20:.0f} MB limit (MAX_FILE_MB)"
        )
    digest = file_sha256(path)
    if existing and existing.content_hash == digest and existing.status == "indexed":
        index.touch(conn, key, st.st_size, st.st_mtime)
        conn.commit()
        return IngestResult(key, "unchanged", existing.chunk_count)

    index.set_status(conn, key, "parsing", collection=opts.collection, source=opts.source)
    conn.commit()
    try:
        parsed = parse_file(path)
    except ParseError as exc:
        return fail(str(exc))
    if parsed.needs_ocr:
        return fail("no text layer (scanned or image-only); OCR is not enabled", "needs_ocr")
    chunks = chunk_elements(
        parsed.elements,
        title=parsed.title,
        count_tokens=embedder.count_tokens,
        chunk_size=opts.chunk_size,
        overlap=opts.chunk_overlap,
    )
    if not chunks:
        return fail("no text found in the file")
    index.set_status(conn, key, "embedding", collection=opts.collection, source=opts.source)
    conn.commit()
    vectors = embedder.embed([c.embed_text for c in chunks])
    doc = Document(
        path=key,
        content_hash=digest,
        size=st.st_size,
        mtime=st.st_mtime,
        mime=parsed.mime,
        title=parsed.title,
        collection=opts.collection,
        source=opts.source,
        chunks=chunks,
    )
    index.replace_chunks(conn, doc, vectors)
    conn.commit()
    log.info("indexed %s: %d chunks", key, len(chunks))
    return IngestResult(key, "indexed", len(chunks))
