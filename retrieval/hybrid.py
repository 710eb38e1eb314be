"""The two retrieval legs in one round trip: BM25 (from the per-collection statistics the chunk
triggers keep, summed over the collections the caller may read) and pgvector HNSW cosine, each
filtered inside its own SQL.

The BM25 leg has two plans. "impact" (the default) reads the best `prune` postings of each query
lexeme in each collection in scope (bm25_postings, migrations 0011 and 0012) and scores them
exactly; a chunk outside every one of those lists is not a candidate. "exact" scores every chunk
whose tsvector matches any query lexeme (GIN): its cost grows with the corpus. A search filtered by
anything but collections (path, type, dates, metadata) takes the exact plan, so pruning never
empties it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import psycopg

from core.types import Passage

from .filters import SearchFilter

Mode = Literal["lexical", "dense", "hybrid"]
LexicalPlan = Literal["impact", "exact"]

# BM25 with IDF = ln(1 + (N - df + 0.5) / (df + 0.5)) (Lucene's, never negative). N, df and the
# average length are summed over the collections in the search's access scope only (<SCOPE>: the
# collections the caller may read; all for an unrestricted search), never over the whole index, so
# a score says nothing about collections the caller cannot read.
_STATS = """
q_stats AS (
    SELECT coalesce(sum(s.n), 0)::bigint AS n, coalesce(sum(s.total_len), 0)::bigint AS total_len
    FROM bm25_collection_stats s
    WHERE <SCOPE:s>
),
q_terms AS MATERIALIZED (
    SELECT t.lexeme,
           ln(1 + (s.n - t.df + 0.5)::float8 / (t.df + 0.5)) AS idf,
           s.total_len::float8 / greatest(s.n, 1) AS avgdl
    FROM (SELECT w.lexeme,
                 (SELECT coalesce(sum(bt.df), 0)::bigint FROM bm25_collection_terms bt
                  WHERE bt.lexeme = w.lexeme AND <SCOPE:bt>) AS df
          FROM (SELECT DISTINCT u.lexeme FROM unnest(to_tsvector('english', %(text)s)) u) w) t
    CROSS JOIN q_stats s
)"""

# Exact: candidates are the chunks matching any query lexeme (GIN); tf comes from the tsvector's
# positions of the query lexemes, which setweight + ts_filter cut out of each candidate's tsvector.
_EXACT = """
q AS (
    SELECT bm25_any(array_agg(lexeme)) AS tsq, array_agg(lexeme) AS lexemes,
           max(avgdl) AS avgdl
    FROM q_terms
),
lexical AS (
    SELECT c.id, sum(qt.idf * m.tf * (%(k1)s::float8 + 1) / (m.tf + %(k1)s::float8
               * (1 - %(b)s::float8 + %(b)s::float8 * c.tsv_len / greatest(q.avgdl, 1)))) AS score
    FROM q
    JOIN chunks c ON c.tsv @@ q.tsq
    JOIN documents d ON d.id = c.document_id
    CROSS JOIN LATERAL (
        SELECT u.lexeme, cardinality(u.positions) AS tf
        FROM unnest(ts_filter(setweight(setweight(c.tsv, 'D'), 'A', q.lexemes), '{a}')) u
    ) m
    JOIN q_terms qt ON qt.lexeme = m.lexeme
    WHERE <FILTER>
    GROUP BY c.id
    ORDER BY score DESC, c.id
    LIMIT %(n)s
)"""

# The same score from the postings: for each query lexeme and each collection in scope that holds
# it (its term row in bm25_collection_terms, one per lexeme and collection, with the term's id),
# the first `prune` postings of that term in rank order (an index-only scan of bm25_postings_top),
# scored with the scope's idf and average length; the best `n` summed scores, then the filter: the
# postings were read in scope already (readable and asked collections), so the filter can only
# drop chunks of a document marked deleted (whose chunks are deleted with the mark); joining every
# candidate to the wide chunks rows before the LIMIT cost a random heap read each. q_terms is
# materialized: inlined, its df lookups ran once per posting.
_IMPACT = """
lex_hits AS MATERIALIZED (
    SELECT p.chunk_id, sum(qt.idf * p.tf * (%(k1)s::float8 + 1) / (p.tf + %(k1)s::float8
               * (1 - %(b)s::float8 + %(b)s::float8 * p.len / greatest(qt.avgdl, 1)))) AS score
    FROM q_terms qt
    JOIN bm25_collection_terms tt ON tt.lexeme = qt.lexeme AND <SCOPE:tt> AND <ASKED:tt>
    CROSS JOIN LATERAL (
        SELECT bp.chunk_id, bp.tf, bp.len FROM bm25_postings bp
        WHERE bp.term_id = tt.id
        ORDER BY bp.rank DESC
        LIMIT %(prune)s
    ) p
    GROUP BY p.chunk_id
),
lex_top AS MATERIALIZED (
    SELECT h.chunk_id, h.score FROM lex_hits h ORDER BY h.score DESC, h.chunk_id LIMIT %(n)s
),
lexical AS (
    SELECT h.chunk_id AS id, h.score
    FROM lex_top h
    JOIN chunks c ON c.id = h.chunk_id
    JOIN documents d ON d.id = c.document_id
    WHERE <FILTER>
)"""

# MATERIALIZED keeps the LIMIT next to the index scan; with hnsw.iterative_scan the scan goes on
# past ef_search until n rows pass the filter. Relaxed order may return them slightly out of
# order: search.fuse re-sorts each leg by its score.
_DENSE = """
dense AS MATERIALIZED (
    SELECT c.id, 1 - (c.embedding <=> %(vec)s) AS score
    FROM chunks c
    JOIN documents d ON d.id = c.document_id
    WHERE <FILTER>
    ORDER BY c.embedding <=> %(vec)s
    LIMIT %(n)s
)"""

_EMPTY = {
    "lexical": "lexical AS (SELECT NULL::bigint AS id, NULL::float8 AS score WHERE false)",
    "dense": "dense AS (SELECT NULL::bigint AS id, NULL::float8 AS score WHERE false)",
}

_SELECT = """
SELECT c.id, c.document_id, d.path, d.title, c.text, c.heading_path, c.page, c.char_start,
       c.char_end, d.collection, c.ordinal, c.context, h.dense_score, h.lexical_score
FROM (SELECT coalesce(dn.id, lx.id) AS id, dn.score AS dense_score, lx.score AS lexical_score
      FROM dense dn FULL JOIN lexical lx ON dn.id = lx.id) h
JOIN chunks c ON c.id = h.id
JOIN documents d ON d.id = c.document_id
"""


@dataclass(frozen=True)
class LegOptions:
    """What the SQL of the legs needs: candidates per leg, BM25 and HNSW knobs, the filter."""

    candidates: int = 100
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    ef_search: int = 100
    filter: SearchFilter = field(default_factory=SearchFilter)
    lexical: LexicalPlan = "impact"
    prune: int = 3000  # postings read per query lexeme and collection (impact plan)

    def lexical_plan(self) -> LexicalPlan:
        """The plan the BM25 leg takes: the impact plan only for filters on collections alone
        (what it prunes by); any other filter could reject every pruned posting."""
        f = self.filter
        narrow = f.path_prefixes or f.file_types or f.metadata
        dated = f.modified_after is not None or f.modified_before is not None
        return "exact" if narrow or dated else self.lexical


@dataclass(frozen=True)
class Candidate:
    """A chunk one or both legs returned, with each leg's raw score (None: not in that leg)."""

    passage: Passage
    ordinal: int
    context: str
    dense_score: float | None
    lexical_score: float | None

    @property
    def embed_text(self) -> str:
        """The text as it was embedded (context line, then the chunk): what a reranker reads."""
        return f"{self.context}\n{self.passage.text}" if self.context else self.passage.text


def build_sql(mode: Mode, opts: LegOptions) -> tuple[str, dict[str, Any]]:
    """The statement for `mode` and its parameters other than text, vec."""
    cond, params = opts.filter.render("d")
    impact = opts.lexical_plan() == "impact"
    lexical = _STATS + "," + (_IMPACT if impact else _EXACT)
    legs = [
        lexical if mode != "dense" else _EMPTY["lexical"],
        _DENSE if mode != "lexical" else _EMPTY["dense"],
    ]
    sql = "WITH " + ",\n".join(legs).replace("<FILTER>", cond) + _SELECT
    for alias in ("s", "bt", "tt"):
        in_scope, scope_params = opts.filter.render_scope(alias)
        sql = sql.replace(f"<SCOPE:{alias}>", in_scope)
        params.update(scope_params)
    asked = "true"
    if opts.filter.collections is not None:  # the same parameter as render's
        asked = "tt.collection = ANY(%(f_collections)s::text[])"
    sql = sql.replace("<ASKED:tt>", asked)
    params.update(n=opts.candidates, k1=opts.bm25_k1, b=opts.bm25_b)
    if impact and mode != "dense":
        params["prune"] = opts.prune
    return sql, params


async def retrieve(
    conn: psycopg.AsyncConnection,
    text: str,
    vector: np.ndarray | None,
    mode: Mode,
    opts: LegOptions,
) -> list[Candidate]:
    """Each leg's top `opts.candidates` chunks among the documents the filter allows."""
    if mode != "lexical" and vector is None:
        raise ValueError(f"{mode} search needs the query's embedding")
    sql, params = build_sql(mode, opts)
    params.update(text=text)
    if mode != "lexical":
        params["vec"] = np.asarray(vector, dtype=np.float32)
    # prepared from the first call (not psycopg's fifth): the text depends only on the mode and
    # the filter's shape, so each connection keeps a handful of statements; hnsw.* are read at run
    # time. Planned for each call's values: the generic plan PostgreSQL switches to after five
    # calls of a statement with both legs took 363 ms p50 where a custom plan takes 47 (100k).
    # (The lexical mode too: a generic plan cannot know how many postings a term has.)
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true),"
            " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
            " set_config('plan_cache_mode', 'force_custom_plan', true)",
            (str(int(opts.ef_search)),),
            prepare=True,
        )
        cur = await conn.execute(sql, params, prepare=True)
        rows = await cur.fetchall()
    return [_candidate(r) for r in rows]


def merge(dense: list[Candidate], lexical: list[Candidate]) -> list[Candidate]:
    """The candidates of the two legs retrieved apart (each with mode "dense" or "lexical"), as
    the hybrid statement returns them together: one per chunk, with each leg's score."""
    merged = {c.passage.chunk_id: c for c in dense}
    for c in lexical:
        both = merged.get(c.passage.chunk_id)
        merged[c.passage.chunk_id] = (
            c if both is None else replace(both, lexical_score=c.lexical_score)
        )
    return list(merged.values())


def _candidate(r: tuple[Any, ...]) -> Candidate:
    passage = Passage(
        chunk_id=r[0],
        document_id=r[1],
        path=r[2],
        title=r[3],
        text=r[4],
        heading_path=tuple(r[5] or ()),
        page=r[6],
        char_start=r[7],
        char_end=r[8],
        score=0.0,
        collection=r[9],
    )
    return Candidate(passage, r[10], r[11], r[12], r[13])
