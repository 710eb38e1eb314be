"""Hybrid search over a real PostgreSQL + pgvector with the packaged MiniLM embedder."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from core.db import async_pool
from retrieval import index
from retrieval.hybrid import SearchParams, hybrid_search
from tests.factories import make_document

CORPUS = {
    "/docs/boiler.md": ["The boiler error code E-4471 means the pressure sensor failed."],
    "/docs/garden.md": ["Tomatoes need full sun and watering every morning in summer."],
    "/docs/cat.md": ["Our cat Miso sleeps on the sofa all afternoon."],
    "/docs/bank.md": ["The savings account pays 2.1 percent interest each year."],
}


@pytest.fixture
def indexed(db: psycopg.Connection, embedder) -> psycopg.Connection:  # type: ignore[no-untyped-def]
    for path, texts in CORPUS.items():
        doc = make_document(path, texts, title=path.rsplit("/", 1)[-1])
        index.replace_chunks(db, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return db


def search(pg_url: str, embedder, text: str, **kw: object) -> list[str]:  # type: ignore[no-untyped-def]
    async def go() -> list[str]:
        pool = async_pool(pg_url, min_size=1, max_size=1)
        await pool.open()
        try:
            async with pool.connection() as conn:
                hits = await hybrid_search(
                    conn, text, embedder.embed([text])[0], SearchParams(**kw)
                )  # type: ignore[arg-type]
        finally:
            await pool.close()
        return [h.path for h in hits]

    return asyncio.run(go())


def test_exact_rare_term_is_found(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    assert search(pg_url, embedder, "E-4471", limit=1) == ["/docs/boiler.md"]


def test_paraphrase_is_found(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    assert search(pg_url, embedder, "how often should I water my vegetable plants", limit=1) == [
        "/docs/garden.md"
    ]


def test_passages_carry_their_source(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        pool = async_pool(pg_url, min_size=1, max_size=1)
        await pool.open()
        async with pool.connection() as conn:
            hits = await hybrid_search(conn, "cat", embedder.embed(["cat"])[0], SearchParams())
        await pool.close()
        return hits

    top = asyncio.run(go())[0]
    assert top.path == "/docs/cat.md" and top.title == "cat.md"
    assert "Miso" in top.text and top.score > 0


def test_deleted_document_never_comes_back(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    index.mark_deleted(indexed, "/docs/boiler.md")
    indexed.commit()
    assert "/docs/boiler.md" not in search(pg_url, embedder, "E-4471 boiler pressure", limit=10)


def test_replacing_a_document_swaps_all_its_chunks(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    doc = make_document("/docs/cat.md", ["Our dog Rex guards the garden gate."], title="cat.md")
    index.replace_chunks(indexed, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    indexed.commit()
    rows = indexed.execute(
        "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE d.path = '/docs/cat.md'"
    ).fetchall()
    assert rows == [("Our dog Rex guards the garden gate.",)]


def test_a_failed_copy_leaves_the_old_chunks(indexed, embedder) -> None:  # type: ignore[no-untyped-def]
    doc = make_document("/docs/cat.md", ["New text"], title="cat.md")
    with pytest.raises(ValueError):
        index.replace_chunks(indexed, doc, embedder.embed(["a", "b"]))  # wrong count
    indexed.rollback()
    rows = indexed.execute(
        "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE d.path = '/docs/cat.md'"
    ).fetchall()
    assert rows == [("Our cat Miso sleeps on the sofa all afternoon.",)]
