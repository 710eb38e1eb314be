"""An email's attachments become documents of their own, `<email path>#<name>`, in the email's
collection, and go when the email goes (or no longer has them). Attachments of attachments are
not expanded further. They share the email's budget (ingest.budget): the chunks the email left,
and its clock; every write is made through `guarded`, so a deleted email gets none back."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import psycopg

from core.embedder import Embedder
from core.types import Chunk, Document
from retrieval import documents, index

from .budget import Deadline, OutOfTime, embed_within, max_chars, too_many_chunks, too_much_text
from .chunking import TooManyChunks, chunk_elements
from .hashing import file_sha256
from .parse import Attachment, Parsed, ParseError

SETTLED = ("indexed", "failed", "needs_ocr")


def index_attachments(
    conn: psycopg.Connection,
    embedder: Embedder,
    parent: str,
    attachments: Sequence[Attachment],
    *,
    collection: str,
    source: str,
    chunk_size: int,
    overlap: int,
    parser: Callable[[Path], Parsed],
    max_chunks: int | None = None,
    deadline: Deadline | None = None,
    guarded: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
) -> None:
    """Index each attachment as a document of its own (unchanged ones are skipped)."""
    keep: list[str] = []
    clock = deadline or Deadline.start(None)
    with tempfile.TemporaryDirectory(prefix="hearth-attachments-") as tmp:
        for att in attachments:
            key = f"{parent}#{att.name}"
            keep.append(key)
            f = Path(tmp) / att.name
            f.write_bytes(att.data)
            digest = file_sha256(f)
            existing = documents.by_path(conn, key)
            conn.commit()
            if existing and existing.content_hash == digest and existing.status in SETTLED:
                continue
            fields = {
                "collection": collection,
                "source": source,
                "size": len(att.data),
                "mtime": 0.0,
                "content_hash": digest,
            }

            def fail(reason: str, key: str = key, fields: dict[str, object] = fields) -> None:
                with guarded():
                    _fail(conn, key, reason, parent, fields)
                conn.commit()

            try:
                clock.check()
                parsed = parser(f)
                chunks = _chunks(parsed, att.name, embedder, chunk_size, overlap, max_chunks)
                clock.check()
            except (ParseError, OutOfTime) as exc:
                fail(str(exc))
                continue
            if not chunks:
                fail("no text found in the attachment")
                continue
            if max_chunks is not None:
                max_chunks -= len(chunks)
            title = parsed.title or att.name
            doc = Document(
                path=key,
                content_hash=digest,
                size=len(att.data),
                mtime=0.0,
                mime=parsed.mime,
                title=title,
                collection=collection,
                source=source,
                chunks=chunks,
                metadata={"attachment_of": parent},
            )
            try:
                vectors = embed_within(embedder, [c.embed_text for c in chunks], clock)
            except OutOfTime as exc:
                fail(str(exc))
                continue
            with guarded():
                index.replace_chunks(conn, doc, vectors, model=embedder.name)
            conn.commit()
    with guarded():
        documents.drop_attachments(conn, parent, keep)
    conn.commit()


def _chunks(
    parsed: Parsed,
    name: str,
    embedder: Embedder,
    chunk_size: int,
    overlap: int,
    max_chunks: int | None,
) -> list[Chunk]:
    """The attachment's chunks within what is left of the email's budget; ParseError when over."""
    if max_chunks is not None:
        limit = max_chars(max(max_chunks, 0), chunk_size)
        chars = sum(len(e.text) for e in parsed.elements)
        if chars > limit:
            raise ParseError(too_much_text(chars, max_chunks, limit))
    try:
        return chunk_elements(
            parsed.elements,
            title=parsed.title or name,
            count_tokens=embedder.count_tokens,
            chunk_size=chunk_size,
            overlap=overlap,
            max_chunks=None if max_chunks is None else max(max_chunks, 0),
        )
    except TooManyChunks as exc:
        raise ParseError(too_many_chunks(exc.limit)) from None


def _fail(
    conn: psycopg.Connection, key: str, reason: str, parent: str, fields: dict[str, object]
) -> None:
    from psycopg.types.json import Jsonb

    documents.record_failure(
        conn, key, "failed", reason, metadata=Jsonb({"attachment_of": parent}), **fields
    )


def drop_attachments(conn: psycopg.Connection, parent: str, keep: Sequence[str] = ()) -> None:
    """Remove the attachment documents of `parent` that are not in `keep`."""
    documents.drop_attachments(conn, parent, list(keep))
    conn.commit()
