"""Hybrid search: dense (pgvector HNSW, cosine) and full-text (tsvector) legs in one round trip,
fused by reciprocal rank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg

from core.types import Passage

from .fusion import rrf

# Both legs and the passage columns in one statement; fusion happens in Python (retrieval.fusion),
# where it is unit-tested and weights are easy to change.
_SQL = """
WITH q AS (SELECT websearch_to_tsquery('english', %(text)s) AS tsq),
dense AS (
    SELECT c.id, row_number() OVER (ORDER BY c.embedding <=> %(vec)s) AS rank
    FROM (SELECT id, embedding FROM chunks ORDER BY embedding <=> %(vec)s LIMIT %(n)s) c
),
lexical AS (
    SELECT c.id, row_number() OVER (ORDER BY ts_rank_cd(c.tsv, q.tsq, 32) DESC, c.id) AS rank
    FROM chunks c, q
    WHERE c.tsv @@ q.tsq
    ORDER BY ts_rank_cd(c.tsv, q.tsq, 32) DESC, c.id
    LIMIT %(n)s
),
hits AS (
    SELECT COALESCE(dense.id, lexical.id) AS id, dense.rank AS dense_rank,
           lexical.rank AS lexical_rank
    FROM dense FULL OUTER JOIN lexical ON dense.id = lexical.id
)
SELECT c.id, c.document_id, d.path, d.title, c.text, c.heading_path, c.page, c.char_start,
       c.char_end, d.collection, hits.dense_rank, hits.lexical_rank
FROM hits
JOIN chunks c ON c.id = hits.id
JOIN documents d ON d.id = c.document_id
WHERE d.status <> 'deleted'
"""


@dataclass(frozen=True)
class SearchParams:
    limit: int = 5
    candidates: int = 40  # per leg, before fusion
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0


async def hybrid_search(
    conn: psycopg.AsyncConnection, text: str, vector: np.ndarray, params: SearchParams
) -> list[Passage]:
    """The best `params.limit` passages for a query, by RRF over the dense and lexical legs."""
    cur = await conn.execute(
        _SQL, {"text": text, "vec": np.asarray(vector, dtype=np.float32), "n": params.candidates}
    )
    rows = await cur.fetchall()
    by_id = {r[0]: r for r in rows}
    dense = [r[0] for r in sorted(rows, key=lambda r: r[10] or 1e9) if r[10] is not None]
    lexical = [r[0] for r in sorted(rows, key=lambda r: r[11] or 1e9) if r[11] is not None]
    fused = rrf(
        {"dense": dense, "lexical": lexical},
        k=params.rrf_k,
        weights={"dense": params.dense_weight, "lexical": params.lexical_weight},
    )
    return [_passage(by_id[cid], score) for cid, score in fused[: params.limit]]


def _passage(r: tuple, score: float) -> Passage:
    return Passage(
        chunk_id=r[0],
        document_id=r[1],
        path=r[2],
        title=r[3],
        text=r[4],
        heading_path=tuple(r[5] or ()),
        page=r[6],
        char_start=r[7],
        char_end=r[8],
        score=score,
        collection=r[9],
    )
