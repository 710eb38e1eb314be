"""Long-lived resources owned by the app's lifespan, and the typed dependencies that expose them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from core.embedder import Embedder
from core.settings import Settings

from .llm import LLMClient
from .metrics import Metrics
from .ratelimit import Limiter


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


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.hearth
    return state


State = Annotated[AppState, Depends(get_state)]
