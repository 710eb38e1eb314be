"""The query-embedding thread (api.query_embedding): questions asked while the model is busy are
embedded together in its next call, each gets its own vector (the real MiniLM's, as if alone),
one model per call, a failure fails only its call, and a question nobody waits for any more is
not embedded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from api.query_embedding import QueryEmbedder
from tests.factories import HashEmbedder

DEADLINE_S = 60


class Gated(HashEmbedder):
    """Records each call's texts; the first call waits until `release` is set."""

    def __init__(self, name: str = "hash") -> None:
        super().__init__(name=name)
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail: str | None = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.entered.set()
        assert self.release.wait(DEADLINE_S), "the test never released the model"
        if self.fail in texts:
            raise RuntimeError("the model broke")
        return super().embed(texts)


async def _busy_then(
    queries: QueryEmbedder, first: Gated, more: list[tuple[Gated, str]]
) -> tuple[Any, list[Any]]:
    """`first` embeds "first" and is held there while `more` are asked; then it is let go."""
    head = asyncio.ensure_future(queries.embed(first, "first"))
    entered = await asyncio.to_thread(first.entered.wait, DEADLINE_S)
    assert entered, "the model was never called"
    rest = [asyncio.ensure_future(queries.embed(e, text)) for e, text in more]
    await asyncio.sleep(0)  # let every one of them queue
    first.release.set()
    for e, _ in more:
        e.release.set()
    return await head, await asyncio.gather(*rest, return_exceptions=True)


def test_questions_that_wait_are_embedded_in_one_call() -> None:
    emb = Gated()
    queries = QueryEmbedder()
    (vec, seconds), rest = asyncio.run(
        _busy_then(queries, emb, [(emb, "b"), (emb, "c"), (emb, "d")])
    )
    assert emb.calls == [["first"], ["b", "c", "d"]]
    alone = HashEmbedder()
    assert np.array_equal(vec, alone.embed(["first"])[0]) and seconds >= 0
    for text, (vector, _) in zip("bcd", rest, strict=True):
        assert np.array_equal(vector, alone.embed([text])[0])


def test_one_model_per_call_and_a_failure_stays_in_its_call() -> None:
    one, other = Gated("hash-a"), Gated("hash-b")
    other.fail = "y"
    queries = QueryEmbedder()
    _, rest = asyncio.run(_busy_then(queries, one, [(one, "x"), (other, "y"), (one, "z")]))
    assert one.calls == [["first"], ["x", "z"]] and other.calls == [["y"]]
    assert isinstance(rest[1], RuntimeError)
    assert not isinstance(rest[0], BaseException) and not isinstance(rest[2], BaseException)
    # the thread goes on after a failure
    other.fail = None
    vector, _ = asyncio.run(queries.embed(other, "y"))
    assert np.array_equal(vector, HashEmbedder(name="hash-b").embed(["y"])[0])


def test_a_question_nobody_waits_for_is_not_embedded() -> None:
    emb = Gated()
    queries = QueryEmbedder()

    async def run() -> None:
        head = asyncio.ensure_future(queries.embed(emb, "first"))
        assert await asyncio.to_thread(emb.entered.wait, DEADLINE_S)
        gone = asyncio.ensure_future(queries.embed(emb, "gone"))
        kept = asyncio.ensure_future(queries.embed(emb, "kept"))
        await asyncio.sleep(0)
        gone.cancel()  # its client went away while the model was busy
        emb.release.set()
        await head
        await kept
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(run())
    assert emb.calls == [["first"], ["kept"]]


def test_minilm_gives_each_question_its_own_vector_in_a_batch(embedder: Any) -> None:
    """Batched or alone, the packaged model's vector for a question is the same (padding to the
    longest question of a call is masked out)."""
    texts = ["boiler", "what does error code E-4471 on the cellar boiler mean?", "tomatoes"]
    alone = np.stack([embedder.embed([t])[0] for t in texts])

    async def together() -> list[tuple[np.ndarray, float]]:
        queries = QueryEmbedder()
        return list(await asyncio.gather(*(queries.embed(embedder, t) for t in texts)))

    got = np.stack([v for v, _ in asyncio.run(together())])
    assert np.allclose(got, alone, atol=1e-5)
