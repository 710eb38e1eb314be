"""A synthetic index in an embedded PostgreSQL, loaded as a large import should be: documents
and chunks by binary COPY with the indexes dropped, then the GIN and HNSW indexes built once
(maintenance_work_mem sized to the graph, one parallel worker). Kept under .cache/bench so the
RAG-turn benchmark can reuse it; the schema is Hearth's own (migrated, same index names)."""

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
POSTINGS = "bm25_postings_top"  # migration 0012's index, as it defines it
POSTINGS_SQL = (
    f"CREATE INDEX {POSTINGS} ON bm25_postings (term_id, rank DESC, chunk_id)"
    " INCLUDE (tf, len);"
    " CREATE INDEX bm25_postings_chunk ON bm25_postings (chunk_id)"
)
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


def load(conn: psycopg.Connection, corpus: SyntheticCorpus) -> dict[str, Any]:
    """Documents and chunks by binary COPY into empty tables with the search indexes dropped."""
    from pgvector.psycopg import register_vector

    register_vector(conn)
    conn.execute(f"DROP INDEX IF EXISTS {HNSW}")
    conn.execute("DROP INDEX IF EXISTS chunks_tsv")
    conn.execute(f"DROP INDEX IF EXISTS {POSTINGS}")
    conn.execute("DROP INDEX IF EXISTS bm25_postings_chunk")
    conn.commit()
    start = time.perf_counter()
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
    conn.commit()
    generate_s = copy_s = 0.0
    clock = time.perf_counter()
    for batch in corpus.batches():
        generate_s += time.perf_counter() - clock
        clock = time.perf_counter()
        _copy_chunks(conn, corpus, batch.doc_ids, batch.ordinals, batch.texts, batch.vectors)
        conn.commit()
        copy_s += time.perf_counter() - clock
        say(f"loaded {batch.doc_ids[-1]:,}/{corpus.n_docs:,} documents")
        clock = time.perf_counter()
    clock = time.perf_counter()
    conn.execute("ANALYZE documents")
    conn.execute("ANALYZE chunks")
    conn.commit()
    analyze_s = time.perf_counter() - clock
    total = time.perf_counter() - start
    return {
        "documents": corpus.n_docs,
        "chunks": corpus.n_chunks,
        "seconds": total,
        "generate_seconds": generate_s,
        "copy_seconds": copy_s,
        "analyze_seconds": analyze_s,
        "chunks_per_s_copy": corpus.n_chunks / copy_s,
        "table_mb": _size_mb(conn, "chunks", total_relation=True),
    }


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
    """The GIN, the BM25 postings' index (then a VACUUM, so its scans are index-only) and the HNSW
    (vector, cosine; Hearth's defaults m=16, ef_construction=64)."""
    gin = _timed_build(conn, "chunks_tsv", "CREATE INDEX chunks_tsv ON chunks USING gin (tsv)", 256)
    postings = _timed_build(conn, POSTINGS, POSTINGS_SQL, 1024)
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM (ANALYZE) bm25_postings")
    conn.autocommit = False
    hnsw = _timed_build(
        conn,
        HNSW,
        f"CREATE INDEX {HNSW} ON chunks USING hnsw (embedding vector_cosine_ops)",
        maintenance_mem_mb(n_chunks, 4 * DIM),
    )
    conn.execute("ANALYZE chunks")
    conn.commit()
    return {
        "gin": gin,
        "postings": {**postings, "table_mb": _size_mb(conn, "bm25_postings")},
        "hnsw_vector": hnsw,
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
