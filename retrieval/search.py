"""Search: the legs (retrieval.hybrid), fusion, the optional rerank stage, then passage
refinement. The one function the chat API, /v1/search, `hearth search` and `hearth eval` call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import psycopg

from core.settings import Settings
from core.types import Passage

from .filters import SearchFilter
from .fusion import rrf, score_fusion
from .hybrid import Candidate, LegOptions, LexicalPlan, Mode, merge, retrieve
from .passages import RefineOptions, refine
from .rerank import Reranker

Fusion = Literal["rrf", "score"]


@dataclass(frozen=True)
class SearchParams:
    """Every knob of one search; `from_settings` gives the configured defaults."""

    limit: int = 5
    mode: Mode = "hybrid"
    fusion: Fusion = "score"
    candidates: int = 100  # per leg, before fusion
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    bm25_plan: LexicalPlan = "impact"
    bm25_prune: int = 3000
    ef_search: int = 100
    rerank_candidates: int = 30
    max_per_document: int = 2
    merge_adjacent: bool = True
    dedup_threshold: float = 0.9
    filter: SearchFilter = field(default_factory=SearchFilter)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> SearchParams:
        params = cls(
            limit=settings.top_k,
            fusion=settings.fusion,
            candidates=settings.search_candidates,
            rrf_k=settings.rrf_k,
            dense_weight=settings.dense_weight,
            lexical_weight=settings.lexical_weight,
            bm25_k1=settings.bm25_k1,
            bm25_b=settings.bm25_b,
            bm25_plan=settings.bm25_plan,
            bm25_prune=settings.bm25_prune,
            ef_search=settings.hnsw_ef_search,
            rerank_candidates=settings.rerank_candidates,
            max_per_document=settings.max_passages_per_document,
            merge_adjacent=settings.merge_adjacent,
            dedup_threshold=settings.dedup_threshold,
        )
        return replace(params, **overrides)


def fuse(candidates: list[Candidate], params: SearchParams) -> list[tuple[Candidate, float]]:
    """The candidates in fused order with their fused score (one leg: that leg's own score)."""
    by_id = {c.passage.chunk_id: c for c in candidates}
    legs = {
        "dense": _leg(candidates, "dense_score"),
        "lexical": _leg(candidates, "lexical_score"),
    }
    weights = {"dense": params.dense_weight, "lexical": params.lexical_weight}
    if params.mode != "hybrid":
        only = legs[params.mode]
        return [(by_id[cid], score) for cid, score in only]
    if params.fusion == "score":
        fused = score_fusion(legs, weights=weights)
    else:
        fused = rrf(
            {name: [cid for cid, _ in leg] for name, leg in legs.items()},
            k=params.rrf_k,
            weights=weights,
        )
    return [(by_id[cid], score) for cid, score in fused]


def _leg(candidates: list[Candidate], attr: str) -> list[tuple[int, float]]:
    scored = [
        (c.passage.chunk_id, float(s)) for c in candidates if (s := getattr(c, attr)) is not None
    ]
    return sorted(scored, key=lambda kv: (-kv[1], kv[0]))


def rerank(
    reranker: Reranker, query: str, ranked: list[tuple[Candidate, float]], top_n: int
) -> list[tuple[Candidate, float]]:
    """The best `top_n` candidates re-ordered by the reranker, with its scores; the rest follow
    in fused order with their fused scores."""
    head = ranked[:top_n]
    scores = reranker.score(query, [c.embed_text for c, _ in head])
    order = sorted(range(len(head)), key=lambda i: (-float(scores[i]), i))
    return [(head[i][0], float(scores[i])) for i in order] + ranked[top_n:]


def leg_options(params: SearchParams) -> LegOptions:
    """What the legs' SQL takes from `params`."""
    # enough candidates per leg that capping and de-duplication can still fill the limit
    per_leg = max(params.candidates, 2 * params.limit)
    return LegOptions(
        candidates=per_leg,
        bm25_k1=params.bm25_k1,
        bm25_b=params.bm25_b,
        ef_search=min(1000, max(params.ef_search, per_leg)),
        filter=params.filter,
        lexical=params.bm25_plan,
        prune=params.bm25_prune,
    )


async def search(
    conn: psycopg.AsyncConnection,
    query: str,
    vector: np.ndarray | None,
    params: SearchParams,
    reranker: Reranker | None = None,
) -> list[Passage]:
    """The best `params.limit` passages for `query` among the documents `params.filter` allows.

    `vector` is the query's embedding (not needed for lexical mode). With a `reranker`, the best
    `rerank_candidates` fused chunks are re-scored by it.
    """
    candidates = await retrieve(conn, query, vector, params.mode, leg_options(params))
    return await _passages(candidates, query, params, reranker)


Connect = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]]


async def search_while_embedding(
    connect: Connect,
    query: str,
    vector: Awaitable[np.ndarray] | None,
    params: SearchParams,
    reranker: Reranker | None = None,
) -> list[Passage]:
    """`search`, for a query whose embedding is still being computed: a hybrid search's BM25
    leg runs meanwhile, on a connection of its own (`connect`, e.g. a pool's), and the dense
    leg when the vector comes; the same candidates as the one hybrid statement, each leg's
    read in its own snapshot. Other modes wait for the vector (dense) or take none (lexical)."""
    if (vector is None) != (params.mode == "lexical"):
        raise ValueError(f"a {params.mode} search takes {'no' if vector else 'a'} vector")
    if vector is None or params.mode == "dense":
        ready = await vector if vector is not None else None
        async with connect() as conn:
            return await search(conn, query, ready, params, reranker)
    opts = leg_options(params)

    async def bm25() -> list[Candidate]:
        async with connect() as conn:
            return await retrieve(conn, query, None, "lexical", opts)

    lexical = asyncio.ensure_future(bm25())
    try:
        ready = await vector
        async with connect() as conn:
            dense = await retrieve(conn, query, ready, "dense", opts)
        candidates = merge(dense, await lexical)
    finally:
        if not lexical.done():
            lexical.cancel()
        elif not lexical.cancelled():
            lexical.exception()  # seen: a failed leg's error is the one the dense leg raised
    return await _passages(candidates, query, params, reranker)


async def _passages(
    candidates: list[Candidate], query: str, params: SearchParams, reranker: Reranker | None
) -> list[Passage]:
    ranked = fuse(candidates, params)
    if reranker is not None and ranked:
        top_n = max(params.rerank_candidates, params.limit)
        ranked = await asyncio.to_thread(rerank, reranker, query, ranked, top_n)
    refine_opts = RefineOptions(
        limit=params.limit,
        max_per_document=params.max_per_document,
        merge_adjacent=params.merge_adjacent,
        dedup_threshold=params.dedup_threshold,
    )
    scored = [(replace(c.passage, score=s, similarity=c.dense_score), c.ordinal) for c, s in ranked]
    return refine(scored, refine_opts)
