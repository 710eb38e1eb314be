"""Long-lived resources owned by the app's lifespan, and the typed dependencies that expose them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from core.embedder import Embedder
from core.logs import current_request_id
from core.settings import Settings
from workers.celery_app import INTERACTIVE_QUEUE, TASK_INGEST

from .llm import LLMClient
from .metrics import Metrics
from .ratelimit import Limiter
from .store.tokencache import TokenCache
from .store.writer import WriteBehind


@dataclass
class AppState:
    settings: Settings
    pool: AsyncConnectionPool
    embedder: Embedder
    llm: LLMClient
    limiter: Limiter
    celery: Celery | None = None  # sends tasks to the workers; None when REDIS_URL is unset
    redis: aioredis.Redis | None = None  # the app's Redis client; None when REDIS_URL is unset
    metrics: Metrics = field(default_factory=Metrics)
    # live tokens' users (TOKEN_CACHE_S) and the writes that wait for the response
    tokens: TokenCache = field(default_factory=lambda: TokenCache(0.0))
    writer: WriteBehind = field(default_factory=lambda: WriteBehind(None))

    async def queue_ingest(
        self, path: str, collection: str, source: str, *, generation: int | None = None
    ) -> None:
        """Send an ingest task to the interactive queue (a user waits on it), carrying the
        request id into the worker's logs. Raises when no queue is configured or reachable.
        `generation`: the document's, for work on it that a delete must cancel (a re-index)."""
        if self.celery is None:
            raise RuntimeError("no ingestion queue: REDIS_URL is not set")
        extra = [] if generation is None else [generation]
        await asyncio.to_thread(
            self.celery.send_task,
            TASK_INGEST,
            args=[path, collection, source, *extra],
            queue=INTERACTIVE_QUEUE,
            headers={"request_id": current_request_id()},
        )


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs a plain function dependency on a thread, a hop per request
    state: AppState = request.app.state.hearth
    return state


State = Annotated[AppState, Depends(get_state)]
