"""Reading documents back and removing them from the index, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

from retrieval import documents, index
from tests.factories import HashEmbedder, make_document

T = TypeVar("T")


def run(pg_url: str, fn: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    async def go() -> T:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return await fn(conn)

    return asyncio.run(go())


def indexed(
    db: psycopg.Connection, path: str, texts: list[str], collection: str = "default"
) -> int:
    doc = make_document(path, texts)
    doc.collection = collection
    doc_id = index.replace_chunks(db, doc, HashEmbedder().embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return doc_id


def chunk_count(db: psycopg.Connection, doc_id: int) -> int:
    row = db.execute("SELECT count(*) FROM chunks WHERE document_id = %s", (doc_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_an_upload_starts_queued_with_its_purpose(db: psycopg.Connection, pg_url: str) -> None:
    doc = run(
        pg_url,
        lambda c: documents.create_upload(
            c, "/up/default/abc/notes.md", collection="default", size=12, purpose="user_data"
        ),
    )
    assert (doc.status, doc.source, doc.size, doc.purpose) == ("queued", "upload", 12, "user_data")
    assert doc.chunk_count == 0 and doc.error is None
    again = run(pg_url, lambda c: documents.get_document(c, doc.id))
    assert again == doc


def test_listing_filters_and_pages(db: psycopg.Connection, pg_url: str) -> None:
    ids = [indexed(db, f"/w/{n}.md", [f"text {n}"]) for n in range(5)]
    other = indexed(db, "/w/family.md", ["family text"], collection="family")
    documents.record_failure(db, "/w/broken.pdf", "failed", "not a PDF")
    db.commit()

    everything = run(pg_url, lambda c: documents.list_documents(c))
    assert [d.path for d in everything][:2] == ["/w/broken.pdf", "/w/family.md"]  # newest first
    assert len(everything) == 7

    family = run(pg_url, lambda c: documents.list_documents(c, collection="family"))
    assert [d.id for d in family] == [other]

    failed = run(pg_url, lambda c: documents.list_documents(c, statuses=["failed"]))
    assert [(d.path, d.error) for d in failed] == [("/w/broken.pdf", "not a PDF")]

    page1 = run(pg_url, lambda c: documents.list_documents(c, limit=3, descending=False))
    page2 = run(
        pg_url,
        lambda c: documents.list_documents(c, limit=3, after_id=page1[-1].id, descending=False),
    )
    assert [d.id for d in page1 + page2] == [*ids, other]
    older = run(pg_url, lambda c: documents.list_documents(c, after_id=ids[2], limit=None))
    assert [d.id for d in older] == [ids[1], ids[0]]


def test_deleting_removes_chunks_and_hides_the_document(
    db: psycopg.Connection, pg_url: str
) -> None:
    doc_id = indexed(db, "/w/a.md", ["alpha", "beta"])
    keep = indexed(db, "/w/b.md", ["gamma"])
    assert chunk_count(db, doc_id) == 2

    assert run(pg_url, lambda c: documents.delete_document(c, doc_id, "/w/a.md")) is True
    assert chunk_count(db, doc_id) == 0 and chunk_count(db, keep) == 1
    assert run(pg_url, lambda c: documents.get_document(c, doc_id)) is None
    assert [d.id for d in run(pg_url, lambda c: documents.list_documents(c))] == [keep]
    row = db.execute("SELECT status, chunk_count FROM documents WHERE id = %s", (doc_id,))
    assert row.fetchone() == ("deleted", 0)
    # a second delete finds nothing to do
    assert run(pg_url, lambda c: documents.delete_document(c, doc_id, "/w/a.md")) is False


def test_delete_does_nothing_when_the_document_moved(db: psycopg.Connection, pg_url: str) -> None:
    doc_id = indexed(db, "/w/a.md", ["alpha"])
    documents.rename(db, doc_id, "/w/renamed.md", collection="default", size=5, mtime=1.0)
    db.commit()
    assert run(pg_url, lambda c: documents.delete_document(c, doc_id, "/w/a.md")) is False
    assert chunk_count(db, doc_id) == 1


def test_discard_forgets_only_queued_rows(db: psycopg.Connection, pg_url: str) -> None:
    up = run(
        pg_url,
        lambda c: documents.create_upload(c, "/up/x.md", collection="default", size=1, purpose="p"),
    )
    done = indexed(db, "/w/done.md", ["done"])
    run(pg_url, lambda c: documents.discard(c, up.id))
    run(pg_url, lambda c: documents.discard(c, done))
    assert [d.id for d in run(pg_url, lambda c: documents.list_documents(c))] == [done]


def test_unknown_and_deleted_ids_are_not_found(db: psycopg.Connection, pg_url: str) -> None:
    doc_id = indexed(db, "/w/gone.md", ["gone"])
    documents.mark_deleted(db, "/w/gone.md")
    db.commit()
    assert run(pg_url, lambda c: documents.get_document(c, doc_id)) is None
    assert run(pg_url, lambda c: documents.get_document(c, 999_999)) is None
