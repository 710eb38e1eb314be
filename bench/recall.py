"""Dense recall@10 against exact search, for the plain HNSW query and for Hearth's dense leg as
search() runs it; the SQL the search benchmark measures; the search parameters Hearth derives."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from .harness import now, summary
from .synthetic import DIM, Query

K = 10
FLOOR_SQL = "SELECT id, text FROM chunks ORDER BY embedding <=> %s LIMIT 10"
EXACT_SQL = "SELECT id FROM chunks ORDER BY embedding <=> %s LIMIT 10  -- exact"
HALFVEC_SQL = (
    f"SELECT id, text FROM chunks ORDER BY embedding::halfvec({DIM}) <=> %s::halfvec({DIM})"
    " LIMIT 10"
)


def search_params(url: str) -> Any:
    from core.settings import get_settings
    from retrieval.search import SearchParams

    return SearchParams.from_settings(get_settings(database_url=url), limit=K)


def leg_options(params: Any) -> Any:
    """The options retrieval.search.search derives for its legs."""
    from retrieval.search import leg_options

    return leg_options(params)


def _ids(conn: psycopg.Connection, sql: str, vec: np.ndarray) -> list[int]:
    # never prepared: a cached plan outlives the planner settings it was made under
    return [r[0] for r in conn.execute(sql, (vec,), prepare=False).fetchall()]


def exact_top(conn: psycopg.Connection, queries: Sequence[Query]) -> list[list[int]]:
    """Exact top 10 by cosine distance: a sequential scan (index scans off)."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        return [_ids(conn, EXACT_SQL, q.vector) for q in queries]


def recall(found: Sequence[Sequence[int]], exact: Sequence[Sequence[int]]) -> float:
    return float(np.mean([len(set(f[:K]) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def hnsw_top(conn: psycopg.Connection, queries: Sequence[Query], sql: str, ef: int) -> list:
    with conn.transaction():
        conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef)}")
        return [_ids(conn, sql, q.vector) for q in queries]


async def hearth_leg_top(url: str, queries: Sequence[Query], params: Any) -> list[list[int]]:
    """The dense leg exactly as search() runs it (ef_search, iterative scan), its top 10."""
    from pgvector.psycopg import register_vector_async

    from retrieval.hybrid import retrieve

    out = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await register_vector_async(conn)
        for q in queries:
            cands = await retrieve(conn, q.text, q.vector, "dense", leg_options(params))
            ranked = sorted(cands, key=lambda c: (-(c.dense_score or 0.0), c.passage.chunk_id))
            out.append([c.passage.chunk_id for c in ranked[:K]])
    return out


def _cached_exact(
    conn: psycopg.Connection, queries: Sequence[Query], cache: Path | None
) -> tuple[list[list[int]], float]:
    """The exact top 10 and its ms per query, from `cache` when it holds these very queries (a
    file in the dataset's folder, which goes with the data it was computed on): at 1M chunks
    exact search is ~8 s a query."""
    digest = hashlib.sha256(b"".join(q.vector.tobytes() for q in queries)).hexdigest()
    if cache is not None:
        try:
            saved = json.loads(cache.read_text())
            if saved["queries"] == digest:
                return saved["exact"], saved["ms_per_query"]
        except (OSError, ValueError, KeyError):
            pass
    start = now()
    exact = exact_top(conn, queries)
    exact_ms = (now() - start) / len(queries) * 1000
    if cache is not None:
        cache.write_text(json.dumps({"queries": digest, "exact": exact, "ms_per_query": exact_ms}))
    return exact, exact_ms


def measure_recall(
    url: str,
    queries: Sequence[Query],
    params: Any,
    efs: Sequence[int] = (40, 100),
    cache: Path | None = None,
) -> dict[str, Any]:
    """Recall of Hearth's dense leg and of the plain HNSW query at each ef_search in `efs` (40
    and 100 always: the report's columns)."""
    from core.db import connect

    # autocommit: each `transaction()` is a real one, so its SET LOCAL ends with it
    with connect(url, autocommit=True) as conn:
        exact, exact_ms = _cached_exact(conn, queries, cache)
        efs = sorted({40, 100, *efs})
        plain = {ef: recall(hnsw_top(conn, queries, FLOOR_SQL, ef), exact) for ef in efs}
    leg = recall(asyncio.run(hearth_leg_top(url, queries, params)), exact)
    return {
        "queries": len(queries),
        "exact_ms_per_query": exact_ms,
        "hearth_dense_leg": leg,
        "hearth_ef_search": leg_options(params).ef_search,
        "vector_ef40": plain[40],
        "vector_ef100": plain[100],
        "vector_by_ef": {str(ef): r for ef, r in plain.items()},
        "_exact": exact,
    }


def floor_latency_by_ef(
    url: str, queries: Sequence[Query], efs: Sequence[int], warm: int = 10
) -> dict[str, dict[str, float]]:
    """What each ef_search costs: the plain HNSW query's latency at 1 client, one query after
    another on one connection (the same statement at each value; ef_search is read when the
    index scan starts, so the prepared plan serves every value)."""
    from core.db import connect

    out = {}
    with connect(url, autocommit=True) as conn:
        for ef in sorted(set(efs)):
            conn.execute(f"SET hnsw.ef_search = {int(ef)}")
            for q in queries[:warm]:
                conn.execute(FLOOR_SQL, (q.vector,), prepare=True).fetchall()
            seconds = []
            for q in queries:
                start = now()
                assert len(conn.execute(FLOOR_SQL, (q.vector,), prepare=True).fetchall()) == K
                seconds.append(now() - start)
            out[str(ef)] = summary(seconds)
    return out
