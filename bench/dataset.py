"""A synthetic index in an embedded PostgreSQL, loaded as a large import should be: documents
and chunks by binary COPY with the indexes dropped and the chunks' BM25 insert trigger off, the
BM25 statistics and postings computed once by `bm25_rebuild()` (set-based), then the GIN, the
postings' and the HNSW indexes built once (maintenance_work_mem sized to the graph, one parallel
worker). Kept under .cache/bench so the RAG-turn benchmark can reuse it; the schema is Hearth's
own (migrated, same index names). Only this loader bypasses the trigger: every product write path
keeps it."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from .harness import REPO, embedded_database, say
from .synthetic import DESCRIPTION, DIM, SyntheticCorpus

META = "bench-dataset.json"
HNSW = "chunks_embedding_hnsw"
HALFVEC = "chunks_embedding_halfvec_hnsw"
POSTINGS = "bm25_postings_top"  # migration 0012's indexes, as it defines them
POSTINGS_SQL = (
    f"CREATE INDEX {POSTINGS} ON bm25_postings (term_id, rank DESC, chunk_id) INCLUDE (tf, len)"
)
POSTINGS_CHUNK = "bm25_postings_chunk"
POSTINGS_CHUNK_SQL = f"CREATE INDEX {POSTINGS_CHUNK} ON bm25_postings (chunk_id)"
BM25_INSERT_TRIGGER = "chunks_bm25_insert"  # 0008's statement trigger, the one a COPY fires
BM25_MODES = ("rebuild", "triggers")
_DOC_COLUMNS = "id, path, title, mime, status, chunk_count, content_hash, size, mtime, indexed_at"
_DOC_TYPES = ["bigint", "text", "text", "text", "text", "integer", "text", "bigint", "float8"]
_CHUNK_COLUMNS = "document_id, ordinal, text, context, char_start, char_end, embedding"
_CHUNK_TYPES = ["bigint", "integer", "text", "text", "integer", "integer", "vector"]


def default_dir(n_chunks: int) -> Path:
    return REPO / ".cache" / "bench" / f"search-{n_chunks}"


def read_meta(data_dir: Path) -> dict[str, Any] | None:
    try:
        meta: dict[str, Any] = json.loads((data_dir / META).read_text())
    except (OSError, ValueError):
        return None
    return meta


def _clear(data_dir: Path) -> None:
    """Remove a previous benchmark dataset; refuse a folder that is not one."""
    if not data_dir.exists():
        return
    if (
        any(data_dir.iterdir())
        and not (data_dir / META).exists()
        and not (data_dir / "pg").exists()
    ):
        raise RuntimeError(f"{data_dir} is not a benchmark dataset; not deleting it")
    shutil.rmtree(data_dir)


def maintenance_mem_mb(n_chunks: int, bytes_per_vector: int) -> int:
    """Enough for the HNSW graph to stay in memory while it is built (~vector + 16 links)."""
    need = n_chunks * (bytes_per_vector + 400) * 1.3 / 2**20
    return int(min(4096, max(256, need)))


@contextlib.contextmanager
def open_dataset(
    n_chunks: int, *, seed: int = 0, data_dir: Path | None = None, reuse: bool = True
) -> Iterator[tuple[str, SyntheticCorpus, dict[str, Any]]]:
    """The database URL, the corpus and the load/build figures, loading the data unless a
    complete dataset of the same size and seed is there and `reuse` is set."""
    data_dir = data_dir or default_dir(n_chunks)
    meta = read_meta(data_dir)
    fresh = not (reuse and meta and meta["chunks"] == n_chunks and meta["seed"] == seed)
    if fresh:
        _clear(data_dir)
    corpus = SyntheticCorpus(n_chunks, seed=seed)
    with embedded_database(data_dir / "pg") as url:
        if fresh:
            meta = {"chunks": n_chunks, "seed": seed, "data": DESCRIPTION, "dir": str(data_dir)}
            with psycopg.connect(url) as conn:
                meta["load"] = load(conn, corpus)
                meta["indexes"] = build_indexes(conn, n_chunks)
            (data_dir / META).write_text(json.dumps(meta, indent=2) + "\n")
        assert meta is not None
        yield url, corpus, {**meta, "reused": not fresh}


def load(
    conn: psycopg.Connection,
    corpus: SyntheticCorpus,
    *,
    bm25: str = "rebuild",
    batch_chunks: int = 20_000,
) -> dict[str, Any]:
    """Documents and chunks by binary COPY into empty tables with the search indexes dropped, in
    one transaction. bm25="rebuild": the chunks' BM25 insert trigger is disabled for the COPY and
    `bm25_rebuild()` then computes the statistics and postings once, with the postings' indexes
    absent (build_indexes makes them); the trigger is enabled again before the commit, and being
    transactional DDL, a failure or a kill mid-load rolls its state back with the rows.
    bm25="triggers": the trigger keeps them per COPY statement, as for any other write."""
    from pgvector.psycopg import register_vector

    if bm25 not in BM25_MODES:
        raise ValueError(f"bm25 must be one of {BM25_MODES}")
    register_vector(conn)
    for index in (HNSW, "chunks_tsv", POSTINGS, POSTINGS_CHUNK):
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.commit()
    start = time.perf_counter()
    generate_s = copy_s = rebuild_s = 0.0
    with conn.transaction():
        if bm25 == "rebuild":
            conn.execute(f"ALTER TABLE chunks DISABLE TRIGGER {BM25_INSERT_TRIGGER}")
        clock = time.perf_counter()
        _copy_documents(conn, corpus)
        documents_s = time.perf_counter() - clock
        clock = time.perf_counter()
        for batch in corpus.batches(batch_chunks):
            generate_s += time.perf_counter() - clock
            clock = time.perf_counter()
            _copy_chunks(conn, corpus, batch.doc_ids, batch.ordinals, batch.texts, batch.vectors)
            copy_s += time.perf_counter() - clock
            say(f"loaded {batch.doc_ids[-1]:,}/{corpus.n_docs:,} documents")
            clock = time.perf_counter()
        if bm25 == "rebuild":
            say("BM25 statistics and postings: bm25_rebuild()")
            clock = time.perf_counter()
            conn.execute("SET LOCAL work_mem = '256MB'")
            conn.execute("SELECT bm25_rebuild()")
            rebuild_s = time.perf_counter() - clock
            say(f"bm25_rebuild() in {rebuild_s:.1f} s")
            conn.execute(f"ALTER TABLE chunks ENABLE TRIGGER {BM25_INSERT_TRIGGER}")
    clock = time.perf_counter()
    for table in ("documents", "chunks", "bm25_collection_stats", "bm25_collection_terms"):
        conn.execute(f"ANALYZE {table}")
    conn.commit()
    analyze_s = time.perf_counter() - clock
    total = time.perf_counter() - start
    return {
        "documents": corpus.n_docs,
        "chunks": corpus.n_chunks,
        "bm25": bm25,
        "seconds": total,
        "generate_seconds": generate_s,
        "documents_copy_seconds": documents_s,
        "copy_seconds": copy_s,
        "rebuild_seconds": rebuild_s,
        "analyze_seconds": analyze_s,
        "chunks_per_s_copy": corpus.n_chunks / copy_s,
        "chunks_per_s_copy_and_bm25": corpus.n_chunks / (copy_s + rebuild_s),
        "table_mb": _size_mb(conn, "chunks", total_relation=True),
    }


def bm25_trigger_enabled(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'chunks'::regclass AND tgname = %s",
        (BM25_INSERT_TRIGGER,),
    ).fetchone()
    return row is not None and row[0] == "O"


def _copy_documents(conn: psycopg.Connection, corpus: SyntheticCorpus) -> None:
    now = conn.execute("SELECT now()").fetchone()
    assert now is not None
    with conn.cursor() as cur:
        sql = f"COPY documents ({_DOC_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)"
        with cur.copy(sql) as copy:
            copy.set_types([*_DOC_TYPES, "timestamptz"])
            for d in range(corpus.n_docs):
                size = int(corpus.doc_sizes[d])
                row = (d + 1, corpus.path(d), corpus.title(d), "text/markdown", "indexed", size)
                copy.write_row((*row, f"{d:064x}", size * 1200, 1.0, now[0]))
        cur.execute("SELECT setval('documents_id_seq', %s)", (corpus.n_docs,))


def _copy_chunks(
    conn: psycopg.Connection,
    corpus: SyntheticCorpus,
    doc_ids: np.ndarray,
    ordinals: np.ndarray,
    texts: list[str],
    vectors: np.ndarray,
) -> None:
    sql = f"COPY chunks ({_CHUNK_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)"
    titles: dict[int, str] = {}
    with conn.cursor() as cur, cur.copy(sql) as copy:
        copy.set_types(_CHUNK_TYPES)
        pos = 0
        for doc, ordinal, text, vec in zip(
            doc_ids.tolist(), ordinals.tolist(), texts, vectors, strict=True
        ):
            if ordinal == 0:
                pos = 0
            title = titles.get(doc) or titles.setdefault(doc, corpus.title(doc - 1))
            copy.write_row((doc, ordinal, text, title, pos, pos + len(text), vec))
            pos += len(text) + 2


def _size_mb(conn: psycopg.Connection, rel: str, total_relation: bool = False) -> float:
    fn = "pg_total_relation_size" if total_relation else "pg_relation_size"
    row = conn.execute(f"SELECT {fn}(%s::regclass)", (rel,)).fetchone()
    assert row is not None
    return round(int(row[0]) / 2**20, 1)


def _timed_build(conn: psycopg.Connection, name: str, sql: str, mem_mb: int) -> dict[str, Any]:
    conn.execute(f"SET maintenance_work_mem = '{mem_mb}MB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")  # 2 processes on 2 cores
    start = time.perf_counter()
    conn.execute(sql)
    conn.commit()
    seconds = time.perf_counter() - start
    say(f"built {name} in {seconds:.1f} s")
    return {"seconds": seconds, "size_mb": _size_mb(conn, name), "maintenance_work_mem_mb": mem_mb}


def build_indexes(conn: psycopg.Connection, n_chunks: int) -> dict[str, Any]:
    """The GIN, the BM25 postings' two indexes (then a VACUUM, so their scans are index-only),
    the HNSW (vector, cosine; Hearth's defaults m=16, ef_construction=64), and a VACUUM of the
    chunks (what autovacuum would do after an import, done before anything is measured)."""
    gin = _timed_build(conn, "chunks_tsv", "CREATE INDEX chunks_tsv ON chunks USING gin (tsv)", 256)
    postings = _timed_build(conn, POSTINGS, POSTINGS_SQL, 1024)
    postings_chunk = _timed_build(conn, POSTINGS_CHUNK, POSTINGS_CHUNK_SQL, 1024)
    conn.commit()
    conn.autocommit = True
    clock = time.perf_counter()
    conn.execute("VACUUM (ANALYZE) bm25_postings")
    vacuum_postings_s = time.perf_counter() - clock
    conn.autocommit = False
    hnsw = _timed_build(
        conn,
        HNSW,
        f"CREATE INDEX {HNSW} ON chunks USING hnsw (embedding vector_cosine_ops)",
        maintenance_mem_mb(n_chunks, 4 * DIM),
    )
    conn.commit()
    conn.autocommit = True
    clock = time.perf_counter()
    conn.execute("VACUUM (ANALYZE) documents, chunks")
    vacuum_chunks_s = time.perf_counter() - clock
    conn.autocommit = False
    return {
        "gin": gin,
        "postings": {
            **postings,
            "table_mb": _size_mb(conn, "bm25_postings"),
            "vacuum_seconds": vacuum_postings_s,
        },
        "postings_chunk": postings_chunk,
        "hnsw_vector": hnsw,
        "vacuum_chunks_seconds": vacuum_chunks_s,
        "heap_mb": _size_mb(conn, "chunks"),
    }


def build_halfvec(conn: psycopg.Connection, n_chunks: int) -> dict[str, Any]:
    """An HNSW on the embedding cast to halfvec (half the size): an expression index."""
    drop_halfvec(conn)
    return _timed_build(
        conn,
        HALFVEC,
        f"CREATE INDEX {HALFVEC} ON chunks USING hnsw"
        f" ((embedding::halfvec({DIM})) halfvec_cosine_ops)",
        maintenance_mem_mb(n_chunks, 2 * DIM),
    )


def drop_halfvec(conn: psycopg.Connection) -> None:
    conn.execute(f"DROP INDEX IF EXISTS {HALFVEC}")
    conn.commit()
