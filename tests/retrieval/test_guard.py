"""retrieval.guard and migration 0009: a delete, by any path, moves the generation, and a guarded
write that began before it is refused (or, if it came first, the delete removes what it wrote)."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest
from psycopg.types.json import Jsonb

from retrieval import documents, guard, index
from tests.factories import HashEmbedder, make_document


def put(db: psycopg.Connection, path: str, text: str = "the pantry shelf") -> None:
    doc = make_document(path, [text])
    index.replace_chunks(db, doc, HashEmbedder().embed([c.embed_text for c in doc.chunks]))
    db.commit()


def chunks_of(db: psycopg.Connection, path: str) -> int:
    row = db.execute(
        "SELECT count(c.id) FROM documents d LEFT JOIN chunks c ON c.document_id = d.id"
        " WHERE d.path = %s",
        (path,),
    ).fetchone()
    db.commit()
    return int(row[0]) if row else 0


def test_every_row_has_its_own_generation_and_a_delete_moves_it(db: psycopg.Connection) -> None:
    put(db, "/w/a.md")
    put(db, "/w/b.md", "other words")
    a, b = guard.read(db, "/w/a.md"), guard.read(db, "/w/b.md")
    assert a.value is not None and b.value is not None and a.value != b.value
    assert guard.read(db, "/w/none.md") == guard.Generation("/w/none.md", None, None)
    put(db, "/w/a.md", "new words")  # a rewrite keeps it
    assert guard.read(db, "/w/a.md").value == a.value
    documents.mark_deleted(db, "/w/a.md")  # the worker's delete
    db.commit()
    after = guard.read(db, "/w/a.md")
    assert after.deleted and after.value not in (a.value, b.value)
    documents.mark_deleted(db, "/w/a.md")  # deleting a deleted row moves nothing
    db.commit()
    assert guard.read(db, "/w/a.md").value == after.value


def test_a_write_after_a_delete_is_refused_and_a_fresh_read_may_write(
    db: psycopg.Connection, pg_url: str
) -> None:
    put(db, "/w/a.md")
    seen = guard.read(db, "/w/a.md")
    db.commit()

    async def api_delete() -> bool:  # the Files API's own code, on its own connection
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            doc_id = db.execute("SELECT id FROM documents WHERE path = '/w/a.md'").fetchone()
            db.commit()
            assert doc_id is not None
            return await documents.delete_document(conn, int(doc_id[0]), "/w/a.md")

    assert asyncio.run(api_delete())
    doc = make_document("/w/a.md", ["resurrected text"])
    with pytest.raises(guard.Superseded), guard.write(db, seen):
        index.replace_chunks(db, doc, HashEmbedder().embed([c.embed_text for c in doc.chunks]))
    db.rollback()
    assert guard.read(db, "/w/a.md").deleted and chunks_of(db, "/w/a.md") == 0

    fresh = guard.read(db, "/w/a.md")  # a fresh add (the file came back) starts from here
    db.commit()
    with guard.write(db, fresh):
        index.replace_chunks(db, doc, HashEmbedder().embed([c.embed_text for c in doc.chunks]))
    db.commit()
    assert fresh.status == "indexed" and chunks_of(db, "/w/a.md") == 1


def test_a_new_row_is_followed_and_a_row_made_meanwhile_refuses(db: psycopg.Connection) -> None:
    seen = guard.read(db, "/w/new.md")
    db.commit()
    with guard.write(db, seen):
        documents.set_status(db, "/w/new.md", "parsing")
    db.commit()
    assert seen.value is not None and seen.status == "parsing"
    with guard.write(db, seen):  # the next write sees its own row
        documents.set_status(db, "/w/new.md", "embedding")
    db.commit()

    late = guard.read(db, "/w/other.md")
    db.commit()
    documents.set_status(db, "/w/other.md", "queued")  # someone else made the row first
    db.commit()
    with pytest.raises(guard.Superseded), guard.write(db, late):
        documents.set_status(db, "/w/other.md", "parsing")
    db.rollback()


def test_a_delete_that_comes_during_the_write_waits_and_then_wins(
    db: psycopg.Connection, pg_url: str
) -> None:
    put(db, "/w/a.md")
    seen = guard.read(db, "/w/a.md")
    db.commit()
    done = threading.Event()

    def delete() -> None:
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute(
                "UPDATE documents SET status = 'deleted', chunk_count = 0 WHERE path = '/w/a.md'"
            )
            other.execute(
                "DELETE FROM chunks WHERE document_id ="
                " (SELECT id FROM documents WHERE path = '/w/a.md')"
            )
        done.set()

    doc = make_document("/w/a.md", ["written while the delete waits"])
    with guard.write(db, seen):
        index.replace_chunks(db, doc, HashEmbedder().embed([c.embed_text for c in doc.chunks]))
        t = threading.Thread(target=delete)
        t.start()
        assert not done.wait(1)  # the row is locked until this write commits
    db.commit()
    t.join(30)
    assert done.is_set()
    assert guard.read(db, "/w/a.md").deleted and chunks_of(db, "/w/a.md") == 0


def test_a_deleted_email_takes_its_attachments(db: psycopg.Connection) -> None:
    put(db, "/w/mail.eml")
    att = make_document("/w/mail.eml#invoice.pdf", ["invoice words"])
    att.metadata = {"attachment_of": "/w/mail.eml"}
    index.replace_chunks(db, att, HashEmbedder().embed([c.embed_text for c in att.chunks]))
    other = make_document("/w/other.eml#x.pdf", ["other words"])
    other.metadata = {"attachment_of": "/w/other.eml"}
    index.replace_chunks(db, other, HashEmbedder().embed([c.embed_text for c in other.chunks]))
    db.execute(
        "UPDATE documents SET metadata = %s WHERE path = '/w/other.eml#x.pdf'",
        (Jsonb({"attachment_of": "/w/other.eml"}),),
    )
    db.commit()
    documents.mark_deleted(db, "/w/mail.eml")
    db.commit()
    paths = {r[0] for r in db.execute("SELECT path FROM documents").fetchall()}
    assert paths == {"/w/mail.eml", "/w/other.eml#x.pdf"}
    assert chunks_of(db, "/w/mail.eml#invoice.pdf") == 0
