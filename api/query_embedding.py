"""Query embeddings on one thread of their own, batched: the questions that arrive while the
model is busy are embedded together in its next call.

One thread, because the embedder takes one call at a time anyway (its lock): more threads would
only wait there, holding the default pool's threads that prompt building and token counting use,
and a torch running on several threads keeps one OpenMP team for this thread rather than one per
pool thread that happened to call it. Batched, because a call on four short questions costs
about 1.3 times a call on one (MiniLM on one core, measured 2026-12-07): under concurrent
searches the queue drains in one call instead of one call per question.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from core.embedder import Embedder

MAX_BATCH = 32  # questions in one call at most


class _Waiting(NamedTuple):
    embedder: Embedder
    text: str
    future: asyncio.Future[tuple[np.ndarray, float]]
    loop: asyncio.AbstractEventLoop


class QueryEmbedder:
    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hearth-query-embed")
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []

    async def embed(self, embedder: Embedder, text: str) -> tuple[np.ndarray, float]:
        """`text`'s vector by `embedder`, and the seconds the model call that made it took."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[np.ndarray, float]] = loop.create_future()
        with self._lock:
            self._waiting.append(_Waiting(embedder, text, future, loop))
        # one drain per question: a drain takes all that wait (up to max_batch), so the later
        # ones may find nothing left
        self._thread.submit(self._drain)
        return await future

    def _drain(self) -> None:
        with self._lock:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
        groups: dict[int, list[_Waiting]] = {}
        for waiting in batch:
            if not waiting.future.cancelled():  # its request is gone: no need to embed it
                groups.setdefault(id(waiting.embedder), []).append(waiting)
        for group in groups.values():  # one model per call (a re-index may switch it)
            started = time.perf_counter()
            try:
                vectors = group[0].embedder.embed([w.text for w in group])
            except Exception as exc:
                for waiting in group:
                    _settle(waiting, error=exc)
                continue
            seconds = time.perf_counter() - started
            for waiting, vector in zip(group, vectors, strict=True):
                _settle(waiting, (np.array(vector, copy=True), seconds))


def _settle(
    waiting: _Waiting, result: tuple[np.ndarray, float] | None = None, error: Any = None
) -> None:
    def settle() -> None:
        if waiting.future.done():  # cancelled meanwhile
            return
        if error is not None:
            waiting.future.set_exception(error)
        else:
            waiting.future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # that request's event loop has closed
        waiting.loop.call_soon_threadsafe(settle)
