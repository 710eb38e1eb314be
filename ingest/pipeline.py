"""From a file on disk to indexed chunks: fingerprint, parse, chunk, embed, write.

Every entry point takes a per-document advisory lock, so two workers never process one document at
once, and is idempotent: running it again on an unchanged file does nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from core.embedder import Embedder
from core.types import Document
from retrieval import index

from .attachments import drop_attachments, index_attachments
from .chunking import chunk_elements
from .hashing import file_sha256
from .parse import Parsed, ParseError, parse_file

log = logging.getLogger(__name__)

SETTLED = ("indexed", "failed", "needs_ocr")
Parser = Callable[[Path], Parsed]


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
    status: str  # indexed | unchanged | moved | copied | failed | needs_ocr | deleted | missing
    chunks: int = 0
    error: str | None = None


def doc_key(path: Path | str) -> str:
    """How a document's path is stored: absolute and normalised, symlinks left as they are."""
    return os.path.abspath(path)


def _lock_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


@contextlib.contextmanager
def document_locks(conn: psycopg.Connection, *keys: str) -> Iterator[None]:
    """Session-level advisory locks on documents, taken in a fixed order (no deadlocks)."""
    ids = sorted({_lock_id(k) for k in keys})
    for i in ids:
        conn.execute("SELECT pg_advisory_lock(%s)", (i,))
    conn.commit()
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.rollback()
            for i in reversed(ids):
                conn.execute("SELECT pg_advisory_unlock(%s)", (i,))
            conn.commit()


def ingest_path(
    conn: psycopg.Connection,
    embedder: Embedder,
    path: Path,
    opts: IngestOptions,
    parser: Parser = parse_file,
) -> IngestResult:
    """Bring the index in line with the file at `path` (which may have been deleted).

    Bad files end `failed` (or `needs_ocr`) with a reason; they never raise.
    """
    key = doc_key(path)
    with document_locks(conn, key):
        return _ingest_locked(conn, embedder, Path(key), opts, parser)


def move_path(
    conn: psycopg.Connection,
    embedder: Embedder,
    src: Path,
    dest: Path,
    opts: IngestOptions,
    parser: Parser = parse_file,
) -> IngestResult:
    """A file was renamed or moved: keep its document (and embeddings) when the content is the
    same; otherwise treat it as a deletion and a new file."""
    old, new = doc_key(src), doc_key(dest)
    with document_locks(conn, old, new):
        doc = index.get_document(conn, old)
        target = Path(new)
        if doc and doc.status == "indexed" and target.is_file() and not Path(old).exists():
            st = target.stat()
            if st.st_size == doc.size and file_sha256(target) == doc.content_hash:
                index.rename(
                    conn,
                    doc.id,
                    new,
                    collection=opts.collection,
                    size=st.st_size,
                    mtime=st.st_mtime,
                )
                conn.commit()
                return IngestResult(new, "moved", doc.chunk_count)
        _ingest_locked(conn, embedder, Path(old), opts, parser)
        return _ingest_locked(conn, embedder, target, opts, parser)


def _ingest_locked(
    conn: psycopg.Connection, embedder: Embedder, path: Path, opts: IngestOptions, parser: Parser
) -> IngestResult:
    key = str(path)
    if not path.is_file():
        gone = index.mark_deleted(conn, key)
        conn.commit()
        drop_attachments(conn, key)
        return IngestResult(key, "deleted" if gone else "missing")
    st = path.stat()
    existing = index.get_document(conn, key)
    if (
        existing
        and existing.status in SETTLED
        and existing.size == st.st_size
        and existing.mtime == st.st_mtime
        and existing.collection == opts.collection
    ):
        return IngestResult(key, "unchanged", existing.chunk_count)

    digest: str | None = None

    def fail(reason: str, status: str = "failed") -> IngestResult:
        index.record_failure(
            conn,
            key,
            status,
            reason,
            collection=opts.collection,
            source=opts.source,
            size=st.st_size,
            mtime=st.st_mtime,
            content_hash=digest,
        )
        conn.commit()
        log.warning("%s: %s", key, reason)
        return IngestResult(key, status, error=reason)

    if st.st_size > opts.max_file_bytes:
        return fail(
            f"file too large: {st.st_size / 2**20:.1f} MB is over the "
            f"{opts.max_file_bytes / 2**20:.0f} MB limit (MAX_FILE_MB)"
        )
    digest = file_sha256(path)
    if existing and existing.content_hash == digest and existing.status == "indexed":
        index.touch(conn, key, st.st_size, st.st_mtime, collection=opts.collection)
        conn.commit()
        return IngestResult(key, "unchanged", existing.chunk_count)
    if existing is None or existing.status == "deleted":
        reused = _reuse_same_content(conn, key, digest, st, opts)
        if reused:
            return reused

    index.set_status(conn, key, "parsing", collection=opts.collection, source=opts.source)
    conn.commit()
    try:
        parsed = parser(path)
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
    index.replace_chunks(conn, doc, vectors, model=embedder.name)
    conn.commit()
    log.info("indexed %s: %d chunks", key, len(chunks))
    if parsed.attachments or existing is not None:
        index_attachments(
            conn,
            embedder,
            key,
            parsed.attachments,
            collection=opts.collection,
            source=opts.source,
            chunk_size=opts.chunk_size,
            overlap=opts.chunk_overlap,
            parser=parser,
        )
    return IngestResult(key, "indexed", len(chunks))


def _reuse_same_content(
    conn: psycopg.Connection, key: str, digest: str, st: os.stat_result, opts: IngestOptions
) -> IngestResult | None:
    """A new path whose bytes are already indexed: a move (the old path is gone) keeps the
    document; a copy gets the chunks and embeddings copied. Nothing is parsed or embedded."""
    twin = index.find_by_hash(conn, digest, exclude_path=key)
    if twin is None:
        return None
    if not Path(twin.path).exists():
        with document_locks(conn, twin.path):
            index.rename(
                conn, twin.id, key, collection=opts.collection, size=st.st_size, mtime=st.st_mtime
            )
            conn.commit()
        return IngestResult(key, "moved", twin.chunk_count)
    index.copy_document(
        conn,
        twin.id,
        key,
        collection=opts.collection,
        source=opts.source,
        size=st.st_size,
        mtime=st.st_mtime,
    )
    conn.commit()
    return IngestResult(key, "copied", twin.chunk_count)
