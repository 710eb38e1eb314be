"""The API's embedder follows the index: when `hearth reindex` switches the index to another
embedding model, the API loads that model (in a thread; the event loop never waits on it) and
embeds queries with it from then on, without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from psycopg_pool import AsyncConnectionPool

from core.embedder import Embedder
from retrieval.reembed import index_meta_async, model_to_follow

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often the API looks at index_meta's model


class IndexEmbedder:
    """An Embedder that delegates to `current`, which `follow` replaces when the index's model
    changed. Code that must embed and compare with one model takes `current` once."""

    def __init__(self, current: Embedder, load: Callable[[str], Embedder]) -> None:
        self.current = current
        self._load = load
        self._seen: str | None = None  # the index's model when last looked at
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def dim(self) -> int:
        return self.current.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.current.embed(texts)

    def count_tokens(self, text: str) -> int:
        return self.current.count_tokens(text)

    def __getattr__(self, attr: str) -> Any:  # max_tokens, tokenizer, backend ...
        return getattr(self.__dict__["current"], attr)

    async def follow(self, pool: AsyncConnectionPool) -> bool:
        """Look at the index's model; load and switch to it if it changed. True if switched."""
        async with self._lock:  # one look at a time, so that an older look cannot switch back
            async with pool.connection() as conn:
                meta = await index_meta_async(conn)
            model = model_to_follow(meta, self._seen, self.current.name)
            if model is not None:
                log.info("the index switched to embedding model %s: loading it", model)
                self.current = await asyncio.to_thread(self._load, model)
            self._seen = meta.get("embed_model")
        return model is not None

    async def watch(self, pool: AsyncConnectionPool, interval_s: float = POLL_S) -> None:
        """`follow` every `interval_s` until cancelled; errors (a database outage) are logged."""
        while True:
            try:
                await self.follow(pool)
            except Exception as exc:
                log.warning("could not check the index's embedding model: %s", exc)
            await asyncio.sleep(interval_s)
