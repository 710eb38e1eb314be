"""The impact plan of the BM25 leg (bm25_postings, migration 0011): the same scores as the exact
plan for every posting it reads, pruning per lexeme and collection by the postings' own rank (so
what one collection holds never changes which postings of another are read), and the exact plan
for filters the pruning could empty."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from retrieval import index
from retrieval.filters import SearchFilter
from retrieval.hybrid import LegOptions, build_sql
from retrieval.search import SearchParams, search
from tests.factories import HashEmbedder, make_document

EMB = HashEmbedder()
WORDS = [
    "boiler",
    "valve",
    "pump",
    "kettle",
    "garden",
    "tomato",
    "pressure",
    "radiator",
    "shed",
    "ladder",
]


def put(db: psycopg.Connection, path: str, texts: list[str], collection: str = "default") -> int:
    db.execute("INSERT INTO collections (name) VALUES (%s) ON CONFLICT DO NOTHING", (collection,))
    doc = make_document(path, texts, title="")
    doc.collection = collection
    doc_id = index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return doc_id


def lexical(pg_url: str, query: str, **kw: object) -> list[tuple[int, float]]:
    async def go() -> list[tuple[int, float]]:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            params = SearchParams(
                mode="lexical",
                limit=100,
                candidates=100,
                max_per_document=0,
                merge_adjacent=False,
                dedup_threshold=1.0,
                **kw,  # type: ignore[arg-type]
            )
            hits = await search(conn, query, None, params)
        return [(h.chunk_id, h.score) for h in hits]

    return asyncio.run(go())


def corpus(db: psycopg.Connection, collections: tuple[str, ...] = ("default",)) -> None:
    rng = random.Random(7)
    for i in range(60):
        texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) for _ in range(3)]
        put(db, f"/c/{i}.md", texts, collections[i % len(collections)])


@pytest.mark.parametrize("query", ["boiler", "valve pressure pump", "kettle garden ladder shed"])
def test_without_pruning_the_impact_plan_scores_exactly(
    db: psycopg.Connection, pg_url: str, query: str
) -> None:
    corpus(db, ("a", "b"))
    for readable in (None, ("a",), ("a", "b")):
        filt = SearchFilter(readable=readable)
        got = lexical(pg_url, query, bm25_plan="impact", bm25_prune=10_000, filter=filt)
        want = lexical(pg_url, query, bm25_plan="exact", filter=filt)
        assert len(want) > 10
        # the same scores in the same order; chunks with equal scores (this corpus has many)
        # may come in another order, as the two plans sum in another order
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-12)
        mine, theirs = dict(got), dict(want)
        for chunk in mine.keys() & theirs.keys():
            assert mine[chunk] == pytest.approx(theirs[chunk], rel=1e-12)
        last = want[-1][1]
        for chunk in mine.keys() ^ theirs.keys():  # only ties at the cut-off
            assert mine.get(chunk, theirs.get(chunk)) == pytest.approx(last, rel=1e-12)


def test_pruning_reads_the_best_postings_of_each_collection(
    db: psycopg.Connection, pg_url: str
) -> None:
    # in each collection, one short chunk full of the word and longer ones with it once
    for coll in ("a", "b"):
        put(db, f"/{coll}/best.md", [f"valve valve valve {coll}"], coll)
        for i in range(5):
            filler = " ".join(WORDS[3:8] * (i + 1))  # no valve in these
            put(db, f"/{coll}/{i}.md", [f"valve {coll} {filler}"], coll)
    best = {
        r[0]
        for r in db.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE d.path LIKE '%%/best.md'"
        )
    }
    db.commit()
    hits = lexical(pg_url, "valve", bm25_prune=1)
    assert {c for c, _ in hits} == best  # the top posting of each collection
    only_a = lexical(pg_url, "valve", bm25_prune=1, filter=SearchFilter(readable=("a",)))
    assert len(only_a) == 1 and only_a[0][0] in best
    # its score is the exact one for the scope
    exact = lexical(pg_url, "valve", bm25_plan="exact", filter=SearchFilter(readable=("a",)))
    assert only_a[0] == pytest.approx(exact[0], rel=1e-12)
    # what is asked for narrows what is read: one posting from collection b
    asked = lexical(pg_url, "valve", bm25_prune=1, filter=SearchFilter(collections=("b",)))
    assert len(asked) == 1 and asked[0][0] in best and asked[0][0] != only_a[0][0]


def test_a_collection_outside_the_scope_changes_nothing_read(
    db: psycopg.Connection, pg_url: str
) -> None:
    corpus(db, ("a",))
    filt = SearchFilter(readable=("a",))
    before = lexical(pg_url, "valve pump", bm25_prune=3, filter=filt)
    for i in range(20):  # better postings for the same words, where the caller cannot read
        put(db, f"/z/{i}.md", ["valve pump valve pump"], "z")
    assert lexical(pg_url, "valve pump", bm25_prune=3, filter=filt) == before


def test_filters_beyond_collections_take_the_exact_plan(
    db: psycopg.Connection, pg_url: str
) -> None:
    corpus(db)
    put(db, "/rare/x.md", ["valve " + " ".join(WORDS[2:] * 3)])  # a weak posting for valve
    narrow = SearchFilter(path_prefixes=("/rare/",))
    assert LegOptions(filter=narrow).lexical_plan() == "exact"
    assert LegOptions(filter=SearchFilter(collections=("a",))).lexical_plan() == "impact"
    assert LegOptions(lexical="exact").lexical_plan() == "exact"
    hits = lexical(pg_url, "valve", bm25_prune=1, filter=narrow)
    assert len(hits) == 1  # pruning to one posting would have found the corpus's best instead
    sql, params = build_sql("hybrid", LegOptions(filter=SearchFilter(readable=("a",))))
    assert "bm25_postings" in sql and params["prune"] == 3000
    sql, params = build_sql("dense", LegOptions())
    assert "bm25_postings" not in sql and "prune" not in params
