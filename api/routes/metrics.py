"""GET /metrics: Prometheus exposition of this API process (api.metrics), plus what is read when
scraped: ingestion queue depth from Redis and documents by status from the database.

An admin token is required unless METRICS_PUBLIC=true (for a scraper on a private network).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from retrieval.documents import LIVE_STATUSES, count_by_status
from workers.celery_app import INGEST_QUEUE, INTERACTIVE_QUEUE
from workers.metrics import EMBED_KEY, FILES_KEY, TASKS_KEY

from ..auth import current_user
from ..errors import APIError
from ..state import AppState, State

router = APIRouter()
log = logging.getLogger(__name__)

QUEUES = (INGEST_QUEUE, INTERACTIVE_QUEUE)
# kombu's Redis transport keeps a queue's prioritised messages in sibling lists "<queue>\x06\x16<n>"
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
READ_TIMEOUT_S = 3.0


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: State) -> Response:
    if not state.settings.metrics_public:
        user = await current_user(request, state)
        if user.role != "admin":
            raise APIError(
                403, "Metrics need an admin token (or METRICS_PUBLIC=true).", code="admin_only"
            )
    await refresh(state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def refresh(state: AppState) -> None:
    """Set the gauges read at scrape time. A part that cannot be read is left out of this
    scrape (and logged) rather than failing it: the other metrics still say what happened."""
    m = state.metrics
    counts, depths, totals = await asyncio.gather(
        _documents_by_status(state),
        _queue_depths(state.redis),
        _worker_totals(state.redis),
        return_exceptions=True,
    )
    # no await from here on: concurrent scrapes cannot interleave between clear and set
    m.documents.clear()
    if isinstance(counts, BaseException):
        log.warning("metrics: documents by status unavailable: %s", counts)
    else:
        for status in LIVE_STATUSES:
            m.documents.labels(status).set(0)
        for status, n in counts.items():
            m.documents.labels(status).set(n)
    m.queue_depth.clear()
    if isinstance(depths, BaseException):
        log.warning("metrics: queue depth unavailable: %s", depths)
    else:
        for queue, n in depths.items():
            m.queue_depth.labels(queue).set(n)
    if isinstance(totals, BaseException):
        log.warning("metrics: worker totals unavailable: %s", totals)
    else:
        m.workers.set(*totals)


async def _documents_by_status(state: AppState) -> dict[str, int]:
    async with asyncio.timeout(READ_TIMEOUT_S), state.pool.connection() as conn:
        return await count_by_status(conn)


async def _queue_depths(redis: aioredis.Redis | None) -> dict[str, int]:
    if redis is None:  # no REDIS_URL: no queues
        return {}
    async with asyncio.timeout(READ_TIMEOUT_S), redis.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            for suffix in PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        lengths = await pipe.execute()
    n = len(PRIORITY_SUFFIXES)
    return {q: sum(lengths[i * n : (i + 1) * n]) for i, q in enumerate(QUEUES)}


async def _worker_totals(
    redis: aioredis.Redis | None,
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """The workers' counts (workers.metrics), summed over every worker that shares this Redis."""
    if redis is None:
        return {}, {}, {}
    async with asyncio.timeout(READ_TIMEOUT_S), redis.pipeline(transaction=False) as pipe:
        for key in (TASKS_KEY, FILES_KEY, EMBED_KEY):
            pipe.hgetall(key)
        tasks, files, embed = [
            {_text(k): int(v) for k, v in found.items()} for found in await pipe.execute()
        ]
    return tasks, files, embed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
