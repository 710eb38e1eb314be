"""Both legs and their fusion over a real PostgreSQL + pgvector with the packaged MiniLM: each leg
finds what the other misses, hybrid finds both, and deleted documents stay gone."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from core.types import Passage
from retrieval import documents, index
from retrieval.search import SearchParams, search
from tests.factories import make_document

PARTS = ["pressure sensor", "pump", "ignition board", "fan", "valve", "thermostat", "flue"]
PEOPLE = ["Mara Lindqvist", "Tobias Okonkwo", "Ines Harrow", "Pavel Dunmore", "Yuki Brandt"]


def corpus() -> dict[str, list[str]]:
    """Forty boiler fault codes that read alike, people's notes, and one gardening note."""
    rng = random.Random(7)
    codes = [f"E-{n}" for n in rng.sample(range(1000, 9999), 40)]
    codes[17] = "E-4471"
    docs = {
        f"/docs/faults/{code}.md": [
            f"Boiler fault {code}: the {PARTS[i % len(PARTS)]} reported a problem; "
            "call the installer if it comes back."
        ]
        for i, code in enumerate(codes)
    }
    for i, name in enumerate(PEOPLE):
        docs[f"/docs/people/{i}.md"] = [
            f"{name} looked at the heating on visit {i} and left a note about the radiators."
        ]
    docs["/docs/garden.md"] = ["Tomato plants want a good soak each morning while summer lasts."]
    return docs


@pytest.fixture
def indexed(db: psycopg.Connection, embedder) -> psycopg.Connection:  # type: ignore[no-untyped-def]
    for path, texts in corpus().items():
        doc = make_document(path, texts, title=path.rsplit("/", 1)[-1])
        index.replace_chunks(db, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return db


def run(pg_url: str, embedder, text: str, **kw: object) -> list[Passage]:  # type: ignore[no-untyped-def]
    async def go() -> list[Passage]:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            from pgvector.psycopg import register_vector_async

            await register_vector_async(conn)
            params = SearchParams(**{"limit": 5, **kw})  # type: ignore[arg-type]
            return await search(conn, text, embedder.embed([text])[0], params)

    return asyncio.run(go())


def paths(pg_url: str, embedder, text: str, **kw: object) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.path for p in run(pg_url, embedder, text, **kw)]


CODE_QUERY = "E-4471"
NAME_QUERY = "Okonkwo"
PARAPHRASE = "how frequently should I irrigate my vegetables"


def test_lexical_finds_exact_codes_and_names_that_dense_misses(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    assert paths(pg_url, embedder, CODE_QUERY, mode="lexical")[0] == "/docs/faults/E-4471.md"
    assert "/docs/faults/E-4471.md" not in paths(pg_url, embedder, CODE_QUERY, mode="dense")
    assert paths(pg_url, embedder, NAME_QUERY, mode="lexical") == ["/docs/people/1.md"]


def test_dense_finds_a_paraphrase_that_lexical_misses(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    assert paths(pg_url, embedder, PARAPHRASE, mode="dense")[0] == "/docs/garden.md"
    assert "/docs/garden.md" not in paths(pg_url, embedder, PARAPHRASE, mode="lexical")


@pytest.mark.parametrize("fusion", ["rrf", "score"])
def test_hybrid_finds_both(indexed, pg_url, embedder, fusion: str) -> None:  # type: ignore[no-untyped-def]
    assert "/docs/faults/E-4471.md" in paths(pg_url, embedder, CODE_QUERY, fusion=fusion)
    assert paths(pg_url, embedder, PARAPHRASE, fusion=fusion)[0] == "/docs/garden.md"


def test_passages_carry_their_source(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    top = run(pg_url, embedder, "tomato watering")[0]
    assert top.path == "/docs/garden.md" and top.title == "garden.md"
    assert "Tomato" in top.text and top.score > 0
    assert top.char_end - top.char_start == len(top.text)


def test_deleted_document_never_comes_back(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    documents.mark_deleted(indexed, "/docs/faults/E-4471.md")
    indexed.commit()
    for mode, expected in (("lexical", 39), ("dense", 45), ("hybrid", 45)):
        found = paths(pg_url, embedder, "E-4471 boiler fault", mode=mode, limit=100)
        assert "/docs/faults/E-4471.md" not in found
        assert len(found) == expected  # every other match is still there


def test_replacing_a_document_swaps_all_its_chunks(indexed, pg_url, embedder) -> None:  # type: ignore[no-untyped-def]
    doc = make_document("/docs/garden.md", ["Our dog Rex guards the gate."], title="garden.md")
    index.replace_chunks(indexed, doc, embedder.embed([c.embed_text for c in doc.chunks]))
    indexed.commit()
    rows = indexed.execute(
        "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE d.path = '/docs/garden.md'"
    ).fetchall()
    assert rows == [("Our dog Rex guards the gate.",)]
    assert paths(pg_url, embedder, "Rex", mode="lexical") == ["/docs/garden.md"]
    assert paths(pg_url, embedder, "tomato", mode="lexical") == []


def test_a_failed_copy_leaves_the_old_chunks(indexed, embedder) -> None:  # type: ignore[no-untyped-def]
    doc = make_document("/docs/garden.md", ["New text"], title="garden.md")
    with pytest.raises(ValueError):
        index.replace_chunks(indexed, doc, embedder.embed(["a", "b"]))  # wrong count
    indexed.rollback()
    rows = indexed.execute(
        "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE d.path = '/docs/garden.md'"
    ).fetchall()
    assert rows == [("Tomato plants want a good soak each morning while summer lasts.",)]
