"""Search filters: the SQL they render, and on a real PostgreSQL that no mode ever returns a
document the filter excludes, and that a selective filter still fills the limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from retrieval import documents, index
from retrieval.filters import SearchFilter
from retrieval.search import SearchParams, search
from tests.factories import HashEmbedder, make_document

EMB = HashEmbedder()


def test_empty_filter_only_hides_deleted_documents() -> None:
    assert SearchFilter().render() == ("d.status <> 'deleted'", {})


def test_every_value_is_a_parameter() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    sql, params = SearchFilter(
        collections=("family", "x'; DROP TABLE chunks; --"),
        path_prefixes=("/home/me/",),
        file_types=("application/pdf", "text/*", "MD"),
        modified_after=when,
        modified_before=1_800_000_000,
        metadata={"author": "Ann"},
    ).render("doc", prefix="p_")
    assert "DROP" not in sql and "Ann" not in sql and "/home" not in sql
    assert sql.startswith("doc.status <> 'deleted' AND doc.collection = ANY(%(p_collections)s")
    assert params["p_collections"] == ["family", "x'; DROP TABLE chunks; --"]
    assert params["p_prefixes"] == ["/home/me/"]
    assert (params["p_mimes"], params["p_families"], params["p_suffixes"]) == (
        ["application/pdf"],
        ["text/"],
        [".md"],
    )
    assert params["p_after"] == when.timestamp() and params["p_before"] == 1_800_000_000
    assert isinstance(params["p_metadata"], Jsonb)
    for name in params:
        assert f"%({name})s" in sql


def test_readable_collections_narrow_and_intersect() -> None:
    f = SearchFilter(collections=("a", "b")).restricted_to(("b", "c"))
    assert (f.collections, f.readable) == (("a", "b"), ("b", "c"))
    assert f.restricted_to(("c", "d")).readable == ("c",)
    sql, params = f.render()
    assert "collection = ANY(%(f_collections)s" in sql and "ANY(%(f_readable)s" in sql
    assert params["f_readable"] == ["b", "c"]


def test_the_score_scope_is_the_readable_collections_only() -> None:
    """BM25 statistics come from the collections the caller may read, never from what they
    asked for (that narrows results only) nor from everything, unless nothing is restricted."""
    assert SearchFilter(collections=("a",)).render_scope("s") == ("true", {})
    f = SearchFilter(collections=("a", "z")).restricted_to(("a", "b"))
    sql, params = f.render_scope("s")
    assert sql == "s.collection = ANY(%(f_readable)s::text[])" and params == {
        "f_readable": ["a", "b"]
    }
    assert SearchFilter(readable=()).render_scope("t")[1] == {"f_readable": []}


DOCS: list[dict[str, Any]] = [
    {"path": "/home/ann/notes/boiler.md", "collection": "family", "mime": "text/markdown",
     "mtime": 1_700_000_000.0, "metadata": {"author": "ann", "tags": ["house"]}},
    {"path": "/home/ann/work/boiler.pdf", "collection": "work", "mime": "application/pdf",
     "mtime": 1_710_000_000.0, "metadata": {"author": "ann"}},
    {"path": "/home/bob/boiler.txt", "collection": "family", "mime": "text/plain",
     "mtime": 1_720_000_000.0, "metadata": {"author": "bob", "tags": ["house", "repair"]}},
    {"path": "/srv/shared/boiler.docx", "collection": "shared", "mime": None,
     "mtime": 1_730_000_000.0, "metadata": {}},
]  # fmt: skip


@pytest.fixture
def corpus(db: psycopg.Connection) -> psycopg.Connection:
    for n, spec in enumerate(DOCS):
        text = f"The boiler pressure dropped again, reading number {n}."  # not repeats: no dedup
        doc = make_document(spec["path"], [text], title="Boiler")
        doc.collection, doc.mime, doc.mtime = spec["collection"], spec["mime"], spec["mtime"]
        doc.metadata = spec["metadata"]
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return db


def found(pg_url: str, filt: SearchFilter, mode: str, query: str = "boiler pressure") -> set[str]:
    async def go() -> set[str]:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            from pgvector.psycopg import register_vector_async

            await register_vector_async(conn)
            params = SearchParams(limit=20, mode=mode, filter=filt)  # type: ignore[arg-type]
            hits = await search(conn, query, EMB.embed([query])[0], params)
        return {h.path for h in hits}

    return asyncio.run(go())


CASES: list[tuple[SearchFilter, set[str]]] = [
    (SearchFilter(), {d["path"] for d in DOCS}),
    (SearchFilter(collections=("family",)), {DOCS[0]["path"], DOCS[2]["path"]}),
    (SearchFilter(collections=()), set()),
    (SearchFilter(readable=("work", "shared")), {DOCS[1]["path"], DOCS[3]["path"]}),
    (
        SearchFilter(collections=("family", "work")).restricted_to(("work",)),
        {DOCS[1]["path"]},
    ),
    (SearchFilter(path_prefixes=("/home/ann/",)), {DOCS[0]["path"], DOCS[1]["path"]}),
    (SearchFilter(path_prefixes=("/home/ann/notes/", "/srv/")), {DOCS[0]["path"], DOCS[3]["path"]}),
    (SearchFilter(file_types=("pdf",)), {DOCS[1]["path"]}),
    (SearchFilter(file_types=("text/*",)), {DOCS[0]["path"], DOCS[2]["path"]}),
    (SearchFilter(file_types=("application/pdf", ".DOCX")), {DOCS[1]["path"], DOCS[3]["path"]}),
    (SearchFilter(modified_after=1_710_000_000), {d["path"] for d in DOCS[1:]}),
    (
        SearchFilter(
            modified_after=datetime.fromtimestamp(1_705_000_000, UTC),
            modified_before=datetime.fromtimestamp(1_720_000_000, UTC),
        ),
        {DOCS[1]["path"]},
    ),
    (SearchFilter(metadata={"author": "ann"}), {DOCS[0]["path"], DOCS[1]["path"]}),
    (SearchFilter(metadata={"tags": ["repair"]}), {DOCS[2]["path"]}),
    (SearchFilter(metadata={"tags": ["house"]}, collections=("family",), file_types=("md",)),
     {DOCS[0]["path"]}),
]  # fmt: skip


@pytest.mark.parametrize("mode", ["lexical", "dense", "hybrid"])
def test_a_filter_never_leaks_and_never_loses(corpus, pg_url: str, mode: str) -> None:  # type: ignore[no-untyped-def]
    for filt, expected in CASES:
        assert found(pg_url, filt, mode) == expected, filt


def test_deleted_documents_stay_out_under_every_filter(corpus, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    documents.mark_deleted(corpus, DOCS[0]["path"])
    corpus.commit()
    for mode in ("lexical", "dense", "hybrid"):
        assert DOCS[0]["path"] not in found(pg_url, SearchFilter(collections=("family",)), mode)


def test_a_selective_filter_still_returns_k_rows(db: psycopg.Connection, pg_url: str) -> None:
    """Half the chunks are near the query and outside the filter, half far from it and inside:
    the planner walks the HNSW index, whose first ef_search rows all fail the filter; the scan
    must go on (pgvector's iterative index scan) until k rows pass."""
    near = [make_document(f"/big/{i}.md", [f"boiler pressure valve note {i}"]) for i in range(300)]
    far = [make_document(f"/small/{i}.md", [f"garden tomato harvest {i}"]) for i in range(300)]
    for doc in near + far:
        doc.collection = "small" if doc.path.startswith("/small/") else "big"
        index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    db.execute("ANALYZE documents")
    db.execute("ANALYZE chunks")
    db.commit()

    async def go() -> list[str]:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            from pgvector.psycopg import register_vector_async

            await register_vector_async(conn)
            # a table this small would be scanned whole and sorted; make the planner walk the
            # HNSW index, as it does on a real-sized index
            await conn.execute("SET enable_seqscan = off")
            await conn.execute("SET enable_sort = off")
            params = SearchParams(
                limit=10,
                mode="dense",
                candidates=10,
                ef_search=10,
                max_per_document=1,
                filter=SearchFilter(collections=("small",)),
            )
            hits = await search(conn, "boiler pressure valve", EMB.embed(["boiler"])[0], params)
        return [h.path for h in hits]

    paths = asyncio.run(go())
    assert len(paths) == 10 and all(p.startswith("/small/") for p in paths)
