"""retrieval.search.search_while_embedding: a hybrid search whose BM25 leg runs while the query's
embedding is still being computed, then the dense leg; the same passages as the one hybrid
statement (retrieval.search.search), over a real PostgreSQL with the packaged MiniLM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector_async

from core.types import Passage
from retrieval.filters import SearchFilter
from retrieval.hybrid import LegOptions, merge, retrieve
from retrieval.search import SearchParams, search, search_while_embedding
from tests.retrieval.test_hybrid import indexed  # noqa: F401  (the fixture)

WAIT_S = 10.0  # a deadline, never a pause
QUERIES = ["E-4471", "Okonkwo radiators", "how frequently should I irrigate my vegetables", "zzz"]


class Connections:
    """Fresh connections, as a pool lends them; notes when each use ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.closed = asyncio.Event()
        self.used = 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await register_vector_async(conn)
            self.used += 1
            yield conn
        self.closed.set()


async def _one_statement(url: str, text: str, vector: np.ndarray, params: SearchParams) -> list:
    async with Connections(url)() as conn:
        return await search(conn, text, vector, params)


def shape(passages: list[Passage]) -> list[tuple[int, float, float | None]]:
    return [(p.chunk_id, round(p.score, 6), p.similarity) for p in passages]


@pytest.mark.parametrize(
    "params",
    [
        SearchParams(limit=5),
        SearchParams(limit=5, fusion="rrf"),
        SearchParams(limit=3, filter=SearchFilter(readable=("default",))),
        SearchParams(limit=5, filter=SearchFilter(readable=())),
        SearchParams(limit=5, mode="dense"),
        SearchParams(limit=5, mode="lexical"),
    ],
)
def test_the_same_passages_as_one_statement(
    indexed: psycopg.Connection,  # noqa: F811
    pg_url: str,
    embedder,  # type: ignore[no-untyped-def]
    params: SearchParams,
) -> None:
    async def go() -> None:
        for text in QUERIES:
            vector = embedder.embed([text])[0]

            async def later(vector: np.ndarray) -> np.ndarray:
                return vector

            coming = None if params.mode == "lexical" else later(vector)
            got = await search_while_embedding(Connections(pg_url), text, coming, params)
            assert shape(got) == shape(await _one_statement(pg_url, text, vector, params)), text

    asyncio.run(go())


def test_merged_legs_are_the_hybrid_candidates(
    indexed: psycopg.Connection,  # noqa: F811
    pg_url: str,
    embedder,  # type: ignore[no-untyped-def]
) -> None:
    async def go() -> None:
        async with Connections(pg_url)() as conn:
            for text in QUERIES:
                vector, opts = embedder.embed([text])[0], LegOptions(candidates=20)
                both = await retrieve(conn, text, vector, "hybrid", opts)
                apart = merge(
                    await retrieve(conn, text, vector, "dense", opts),
                    await retrieve(conn, text, None, "lexical", opts),
                )
                assert {(c.passage.chunk_id, c.dense_score, c.lexical_score) for c in apart} == {
                    (c.passage.chunk_id, c.dense_score, c.lexical_score) for c in both
                }, text
                assert len(apart) == len(both)

    asyncio.run(go())


def test_the_bm25_leg_runs_before_the_vector_comes(
    indexed: psycopg.Connection,  # noqa: F811
    pg_url: str,
    embedder,  # type: ignore[no-untyped-def]
) -> None:
    """The vector is given only once a connection's use has ended: the BM25 leg's (waiting for
    the vector first would end in this deadline's TimeoutError)."""

    async def go() -> list[Passage]:
        connect = Connections(pg_url)

        async def vector() -> np.ndarray:
            await asyncio.wait_for(connect.closed.wait(), WAIT_S)
            return embedder.embed(["E-4471"])[0]

        found = await search_while_embedding(connect, "E-4471", vector(), SearchParams(limit=3))
        assert connect.used == 2
        return found

    assert "E-4471" in asyncio.run(go())[0].text


def test_a_failed_embedding_leaves_no_leg_running(
    indexed: psycopg.Connection,  # noqa: F811
    pg_url: str,
) -> None:
    async def go() -> None:
        connect = Connections(pg_url)

        async def vector() -> np.ndarray:
            raise RuntimeError("model failed")

        with pytest.raises(RuntimeError, match="model failed"):
            await search_while_embedding(connect, "E-4471", vector(), SearchParams())
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), WAIT_S)
        assert all(t.done() for t in others)

    asyncio.run(go())
