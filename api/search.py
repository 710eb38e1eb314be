"""One search request, from its JSON shape to passages: shared by POST /v1/search, the chat
API and `hearth search`, so all three retrieve the same way."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.embedder import Embedder
from core.settings import Settings
from core.types import Passage
from retrieval.filters import SearchFilter
from retrieval.rerank import Reranker, load_reranker
from retrieval.search import SearchParams, search, search_while_embedding

from . import timing
from .errors import APIError
from .index_embedder import IndexEmbedder
from .query_embedding import QueryEmbedder


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # a date without a zone is taken as UTC
    return value


class SearchFilters(BaseModel):
    """Which documents may be returned; every field given narrows the search."""

    model_config = ConfigDict(extra="forbid")
    collections: list[str] | None = None
    path_prefix: str | list[str] | None = None
    file_types: list[str] | None = Field(
        default=None, description='MIME types ("application/pdf", "text/*") or suffixes ("md")'
    )
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    metadata: dict[str, Any] | None = Field(
        default=None, description="documents whose metadata contains this JSON object"
    )

    @field_validator("metadata")
    @classmethod
    def _finite(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Python's JSON reader takes NaN, Infinity and 1e400 (a float overflow); PostgreSQL's
        jsonb takes none of them."""
        stack: list[Any] = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError("numbers must be finite (NaN and Infinity are not JSON)")
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return value

    def to_filter(self) -> SearchFilter:
        prefixes = [self.path_prefix] if isinstance(self.path_prefix, str) else self.path_prefix
        return SearchFilter(
            collections=tuple(self.collections) if self.collections is not None else None,
            path_prefixes=tuple(prefixes or ()),
            file_types=tuple(self.file_types or ()),
            modified_after=_utc(self.modified_after),
            modified_before=_utc(self.modified_before),
            metadata=self.metadata or {},
        )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    k: int | None = Field(default=None, ge=1, le=100, description="default: TOP_K")
    filters: SearchFilters | None = None
    mode: Literal["lexical", "dense", "hybrid"] = "hybrid"
    rerank: bool | None = Field(default=None, description="default: on when RERANK_MODEL is set")


def passage_json(rank: int, p: Passage) -> dict[str, Any]:
    """A search result: the passage (core.types.Passage.as_json), its rank and its text."""
    return {"rank": rank, **p.as_json(), "text": p.text}


async def _reranker(settings: Settings, wanted: bool | None) -> Reranker | None:
    if wanted is False or (wanted is None and not settings.rerank_model):
        return None
    if not settings.rerank_model:
        raise APIError(
            400,
            "Reranking is not configured on this server (RERANK_MODEL is unset).",
            param="rerank",
            code="rerank_unavailable",
        )
    return await asyncio.to_thread(load_reranker, settings.rerank_model)


_VECTORS: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
VECTOR_CACHE_SIZE = 2048

_QUERIES = QueryEmbedder()  # this process's query-embedding thread


async def query_vector(embedder: Embedder, query: str) -> np.ndarray:
    """The query's embedding, from a small LRU cache when the same question comes again (chat UIs
    re-send it on regenerate; a follow-up's fallback query repeats the previous question). The
    embedding runs on the query-embedding thread (api.query_embedding), with the questions
    asked meanwhile: the event loop never waits on the model. Timed as the request's `embed`
    (waiting for the thread included) and `embed-model` (the model call) stages."""
    key = (id(embedder), query)  # one embedder per process; ids are not reused while it lives
    hit = _VECTORS.get(key)
    if hit is not None:
        _VECTORS.move_to_end(key)
        return hit
    timings = timing.current()
    with timings.stage("embed"):
        vector, model_s = await _QUERIES.embed(embedder, query)
    timings.add("embed-model", model_s)
    _VECTORS[key] = vector
    while len(_VECTORS) > VECTOR_CACHE_SIZE:
        _VECTORS.popitem(last=False)
    return vector


async def warm_up(embedder: Embedder) -> None:
    """One embedding on the query-embedding thread, so that the first question does not pay for
    the model's first call (its lazy set-up, the thread's start)."""
    await _QUERIES.embed(embedder, "warm")


class EarlyVector:
    """A query's embedding started before the search is ready to use it, so that it overlaps
    what a route does first (POST /v1/search: the caller's readable collections): the model is
    busy about 15 ms on one short question, and the access look-up need not wait for it."""

    def __init__(self, embedder: Embedder, query: str) -> None:
        following = embedder if isinstance(embedder, IndexEmbedder) else None
        self.model: Embedder = following.current if following else embedder  # one per query
        self.task: asyncio.Task[np.ndarray] = asyncio.ensure_future(query_vector(self.model, query))

    def close(self) -> None:
        """Done with it, used or not (the request failed before its search): a pending
        embedding is cancelled, a failed one's error counts as seen (no "never retrieved" log)."""
        if not self.task.done():
            self.task.cancel()
        elif not self.task.cancelled():
            self.task.exception()


def early_vector(embedder: Embedder, req: SearchRequest) -> EarlyVector | None:
    """`req`'s query embedding, started now; None for a lexical search (no vector needed)."""
    return None if req.mode == "lexical" else EarlyVector(embedder, req.query)


async def run_search(
    pool: AsyncConnectionPool,
    embedder: Embedder,
    settings: Settings,
    req: SearchRequest,
    *,
    readable: tuple[str, ...] | None = None,
    early: EarlyVector | None = None,
) -> list[Passage]:
    """The passages for `req`. `readable` (access control, a later issue) limits the search to
    those collections, inside the SQL of both legs. `early`: `req`'s embedding, started by the
    caller (early_vector), else it starts here; a hybrid search's BM25 leg runs while it is
    computed (retrieval.search.search_while_embedding). It is cancelled, or its error seen,
    when the search fails first."""
    if early is None:
        early = early_vector(embedder, req)
    try:
        return await _run_search(pool, embedder, settings, req, readable, early)
    finally:
        if early is not None:
            early.close()


async def _run_search(
    pool: AsyncConnectionPool,
    embedder: Embedder,
    settings: Settings,
    req: SearchRequest,
    readable: tuple[str, ...] | None,
    early: EarlyVector | None,
) -> list[Passage]:
    filt = req.filters.to_filter() if req.filters else SearchFilter()
    if readable is not None:
        filt = filt.restricted_to(readable)
    params = SearchParams.from_settings(
        settings, limit=req.k or settings.top_k, mode=req.mode, filter=filt
    )
    reranker = await _reranker(settings, req.rerank)
    timings = timing.current()

    async def one_statement(vector: np.ndarray | None) -> list[Passage]:
        with timings.stage("search"):
            async with pool.connection() as conn:
                return await search(conn, req.query, vector, params, reranker)

    if early is None:  # lexical: no vector
        return await one_statement(None)
    following = embedder if isinstance(embedder, IndexEmbedder) else None
    used = early.model
    try:
        if early.task.done():  # a cached vector: both legs in one statement
            return await one_statement(early.task.result())
        # `search` is timed from the vector's arrival: the BM25 leg ran during `embed`
        arrived = 0.0

        async def embedded() -> np.ndarray:
            nonlocal arrived
            vector = await early.task
            arrived = time.perf_counter()
            return vector

        try:
            return await search_while_embedding(
                pool.connection, req.query, embedded(), params, reranker
            )
        finally:
            if arrived:
                timings.add("search", time.perf_counter() - arrived)
    except psycopg.errors.DataException as exc:
        # `hearth reindex` switched the index to a model of another dimension since the query
        # was embedded: load that model (or wait for the poll loading it) and search again
        if following is None or "dimensions" not in str(exc):
            raise
        await following.follow(pool)
        if following.current is used:
            raise
        return await one_statement(await query_vector(following.current, req.query))
