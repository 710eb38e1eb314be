"""GET /health: is every part Hearth needs reachable? Unauthenticated, no content revealed."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..state import State

router = APIRouter()


def redis_client_url(url: str) -> str:
    """Celery's `redis+socket://` form as redis-py's `unix://`."""
    return (
        "unix://" + url.removeprefix("redis+socket://")
        if url.startswith("redis+socket://")
        else url
    )


async def _check_db(state: State) -> str:
    async with state.pool.connection(timeout=3) as conn:
        await conn.execute("SELECT 1")
    return "ok"


async def _check_redis(state: State) -> str:
    if not state.settings.redis_url:
        return "not configured"
    client = aioredis.Redis.from_url(redis_client_url(state.settings.redis_url), socket_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()
    return "ok"


async def _check_llm(state: State) -> str:
    await state.llm.models()
    return "ok"


@router.get("/health")
async def health(state: State) -> JSONResponse:
    names = ("database", "redis", "llm")
    results = await asyncio.gather(
        _check_db(state), _check_redis(state), _check_llm(state), return_exceptions=True
    )
    checks = {
        n: (r if isinstance(r, str) else f"error: {type(r).__name__}")
        for n, r in zip(names, results, strict=True)
    }
    ok = all(v in ("ok", "not configured") for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503
    )
