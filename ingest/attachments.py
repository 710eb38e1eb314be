"""An email's attachments become documents of their own, `<email path>#<name>`, in the email's
collection, and go when the email goes (or no longer has them). Attachments of attachments are
not expanded further."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from core.embedder import Embedder
from core.types import Document
from retrieval import index

from .chunking import chunk_elements
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
) -> None:
    keep: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hearth-attachments-") as tmp:
        for att in attachments:
            key = f"{parent}#{att.name}"
            keep.append(key)
            f = Path(tmp) / att.name
            f.write_bytes(att.data)
            digest = file_sha256(f)
            existing = index.get_document(conn, key)
            if existing and existing.content_hash == digest and existing.status in SETTLED:
                continue
            fields = {
                "collection": collection,
                "source": source,
                "size": len(att.data),
                "mtime": 0.0,
                "content_hash": digest,
            }
            try:
                parsed = parser(f)
            except ParseError as exc:
                _fail(conn, key, str(exc), parent, fields)
                continue
            title = parsed.title or att.name
            chunks = chunk_elements(
                parsed.elements,
                title=title,
                count_tokens=embedder.count_tokens,
                chunk_size=chunk_size,
                overlap=overlap,
            )
            if not chunks:
                _fail(conn, key, "no text found in the attachment", parent, fields)
                continue
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
            vectors = embedder.embed([c.embed_text for c in chunks])
            index.replace_chunks(conn, doc, vectors, model=embedder.name)
            conn.commit()
    drop_attachments(conn, parent, keep)


def _fail(
    conn: psycopg.Connection, key: str, reason: str, parent: str, fields: dict[str, object]
) -> None:
    from psycopg.types.json import Jsonb

    index.record_failure(
        conn, key, "failed", reason, metadata=Jsonb({"attachment_of": parent}), **fields
    )
    conn.commit()


def drop_attachments(conn: psycopg.Connection, parent: str, keep: Sequence[str] = ()) -> None:
    """Remove the attachment documents of `parent` that are not in `keep`."""
    index.drop_attachments(conn, parent, list(keep))
    conn.commit()
